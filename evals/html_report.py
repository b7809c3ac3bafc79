"""report.html: an error browser for one eval report, a static page that opens offline from the report folder.

One card per question (the question and choices as in the file, the letters'
probabilities as bars, the frames the model was shown as a contact sheet, the
run's notes), with filters and sorting in a few lines of inline JavaScript.
Every string from the question file or the records is data, so it is escaped
with html.escape(quote=True) wherever it lands; the script reads only data-*
attributes. The page is built as a list of string parts joined once, so 1,490
questions with 15 frames each cost linear time and memory.

    python -m evals.html_report --screenshot runs/eval/x/report.html report-page.png
"""
from __future__ import annotations

import argparse
import math
import os
import string
from contextlib import contextmanager
from html import escape
from pathlib import Path
from urllib.parse import quote

from evals import report as rep
from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.questions import Question
from roadbuddy.video.thumbnails import thumbnail_path  # the page reads the thumbnails where the pipeline writes them

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser download cannot be reached from our machines
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def _e(value) -> str:
    return escape(str(value), quote=True)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x) -> str:
    """A finite float for a data-* attribute, or "" (the script sorts those last)."""
    return "" if x is None or not math.isfinite(x) else f"{x:.6f}"


def _bar(p, cls: str = "bar", title: str = "") -> str:
    width = 0.0 if p is None else max(0.0, min(1.0, float(p))) * 100
    tip = f' title="{_e(title)}"' if title else ""
    return f'<span class="{cls}"{tip}><i style="width:{width:.1f}%"></i></span>'


CSS = """
body{font:13px/1.35 system-ui,sans-serif;margin:0 14px 14px;color:#222;background:#f3f3f3}
h1{font-size:17px;margin:10px 0 4px}.sum p{margin:2px 0}
#ctl{position:sticky;top:0;z-index:1;background:#f3f3f3;padding:6px 0;border-bottom:1px solid #ccc}
#ctl label{margin-right:12px}
.card{background:#fff;border:1px solid #ccc;border-left:5px solid #3a7;margin:8px 0;padding:6px 10px;
  content-visibility:auto;contain-intrinsic-size:auto 320px}
.card.wrong{border-left-color:#c33}.card.changed{outline:2px solid #e90}
.hd{color:#555}.hd b{color:#000;font-size:14px}.q{font-weight:600;white-space:pre-wrap;margin:4px 0}
.ch{display:grid;grid-template-columns:1.4em minmax(0,1fr) 240px 3.6em;gap:8px;align-items:center;padding:1px 3px}
.ch.truth{background:#e2f4e5}.ch.pred:not(.truth){background:#fbe2e2}.ch .p{text-align:right}
.bar{display:block;height:11px;background:#e6e6e6}.bar i{display:block;height:100%;background:#4a78c2}
.bar.o{height:3px;margin-top:2px}.bar.o i{background:#999}
.tag{font-size:11px;padding:0 4px;border-radius:3px;color:#fff;background:#3a7;margin-left:4px}
.tag.pr{background:#4a78c2}
.choices{max-width:900px}.sheet{display:flex;flex-wrap:wrap;gap:4px;margin:5px 0}
figure{margin:0;width:96px;font-size:11px;text-align:center;color:#555;white-space:nowrap}
figure img,.ph{display:block;width:96px;height:54px;object-fit:cover;background:#ddd;font-size:10px;line-height:1.3}
figure.sup img,figure.sup .ph{outline:3px solid #e90}.meta{color:#555;font-size:12px;margin:1px 0}
figure.sel img,figure.sel .ph{box-sizing:border-box;border:3px dashed #c3c}
.key{display:inline-block;width:24px;height:11px;margin:0 4px 0 2px;vertical-align:middle;box-sizing:border-box}
.key.sup{border:3px solid #e90}.key.sel{border:3px dashed #c3c}
.err{color:#b00}pre{margin:2px 0;white-space:pre-wrap;background:#f6f6f6;padding:2px 4px}
[hidden]{display:none!important}
"""

# Filters hide cards through the `hidden` attribute; sorting re-appends the cards in key order (missing keys last).
SCRIPT = """
const $ = s => document.querySelector(s), list = $('#cards'), cards = Array.from(list.children);
function apply() {
  const wrong = $('#f-wrong').checked, chg = $('#f-changed') && $('#f-changed').checked;
  const cat = $('#f-cat').value, n = $('#f-n').value, clip = $('#f-clip').value;
  let shown = 0;
  for (const c of cards) {
    const d = c.dataset;
    const ok = (!wrong || d.correct === '0') && (!chg || d.changed === '1') && (!n || d.n === n)
      && (!cat || d.cats.split(' ').includes(cat)) && (!clip || d.clip === clip);
    c.hidden = !ok; shown += ok;
  }
  $('#count').textContent = shown + ' of ' + cards.length + ' questions shown';
}
function sort() {
  const [key, dir] = $('#sort').value.split(':'), sign = dir === 'desc' ? -1 : 1;
  const val = c => { const v = parseFloat(c.dataset[key]); return isNaN(v) ? Infinity : sign * v; };
  cards.slice().sort((a, b) => val(a) - val(b) || a.dataset.pos - b.dataset.pos).forEach(c => list.appendChild(c));
}
document.querySelectorAll('#ctl select, #ctl input')
  .forEach(el => el.addEventListener('change', () => { sort(); apply(); }));
apply();
"""


def title(report: dict) -> str:
    s = report.get("settings") or {}
    return f"{rep.evaluated(s)} on {Path(str(s.get('split') or 'split')).name}"


def _summary(report: dict, baseline: dict | None, changed: int) -> list[str]:
    acc, prior, vp = report["accuracy"], report["prior"], report["vs_prior"]
    s = report.get("settings") or {}
    lo, hi = acc["ci95"]
    out = [f'<h1>Eval report: {_e(title(report))}</h1><div class="sum">']
    if s:
        out.append('<p class="meta">' + _e(rep.settings_line(s)) + "</p>")
    out.append(f"<p><b>Accuracy {_pct(acc['accuracy'])}</b> ({acc['correct']}/{acc['n']}; 95% CI {_pct(lo)} to "
               f"{_pct(hi)}) on {report['questions']} questions from {report['clips']} clips.</p>")
    out.append(f"<p>Prior baseline ({_e(prior.get('rule', ''))}): {_pct(prior['accuracy'])}; margin "
               f"{100 * report['margin_over_prior']:+.1f} points ({vp['wins']} wins, {vp['losses']} losses against "
               f"it, McNemar p = {vp['mcnemar_p']:.3g}).</p>")
    c = report.get("comparison")
    if c:
        out.append(f"<p>Against the baseline <code>{_e(c.get('baseline') or '')}</code>: {_pct(c['accuracy_here'])} "
                   f"here vs {_pct(c['accuracy_baseline'])} on {c['common_questions']} common questions; "
                   f"{c['wins']} wins, {c['losses']} losses, McNemar p = {c['mcnemar_p']:.3g}.</p>")
    if baseline is not None:
        out.append(f"<p>{changed} questions answered differently from the baseline come first (outlined).</p>")
    fb, err, conf = report.get("fallbacks") or {}, report.get("errors") or {}, report.get("confidence")
    notes = [f"fallbacks {fb.get('count', 0)}", f"errors {err.get('count', 0)}"]
    if conf:
        notes.append(f"mean p(right letter) {conf['mean']:.3f}")
    out.append('<p class="meta">' + ", ".join(notes) + ".</p></div>")
    return out


def _controls(report: dict, baseline: dict | None) -> list[str]:
    pq = report["per_question"]
    cats = sorted({c for r in pq for c in r.get("categories", [])})
    nums = sorted({str(r["num_choices"]) for r in pq}, key=int)
    clips = sorted({r["clip"] for r in pq})

    def select(ident: str, label: str, values) -> str:
        opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        return f'<label>{label} <select id="{ident}"><option value="">all</option>{opts}</select></label>'

    sorts = [("pos:asc", "changed first, file order" if baseline is not None else "file order"),
             ("conf:asc", "confidence, lowest first"), ("conf:desc", "confidence, highest first"),
             ("ptrue:asc", "p(true letter), lowest first"), ("ptrue:desc", "p(true letter), highest first")]
    out = ['<div id="ctl"><label><input type="checkbox" id="f-wrong"> wrong only</label>']
    if baseline is not None:
        out.append('<label><input type="checkbox" id="f-changed"> changed vs baseline only</label>')
    out += [select("f-cat", "category", cats), select("f-n", "choices", nums), select("f-clip", "clip", clips),
            '<label>sort <select id="sort">'
            + "".join(f'<option value="{v}">{t}</option>' for v, t in sorts) + "</select></label>",
            '<span id="count"></span></div>']
    return out


def _choices(q: Question | None, row: dict, rec: dict) -> list[str]:
    n = row["num_choices"]
    letters = string.ascii_uppercase[:n]
    texts = q.raw_choices if q is not None else ("",) * n
    probs = rec.get("probs") or {}
    orders = [o for o in rec.get("orders") or [] if isinstance(o, dict)]
    # an order lists file choices in the order shown; invert it to read each file choice's shown letter
    shown_as = [{int(j): string.ascii_uppercase[pos] for pos, j in enumerate(o.get("order") or [])} for o in orders]
    out = ['<div class="choices">']
    for i, (letter, text) in enumerate(zip(letters, texts)):
        cls = "ch" + (" truth" if letter == row["truth"] else "") + (" pred" if letter == row["answer"] else "")
        tags = ('<span class="tag">true</span>' if letter == row["truth"] else "") + (
            '<span class="tag pr">predicted</span>' if letter == row["answer"] else "")
        p = probs.get(letter)
        bars = [_bar(p)]
        for k, (o, inv) in enumerate(zip(orders, shown_as)):
            shown = inv.get(i)
            po = (o.get("probs") or {}).get(shown) if shown else None
            bars.append(_bar(po, "bar o", f"order {k + 1}: shown as {shown or '?'}, p = {_pct(po)}"))
        out.append(f'<div class="{cls}" data-letter="{letter}"><b>{letter}</b><span>{_e(text)}{tags}</span>'
                   f'<span>{"".join(bars)}</span><span class="p">{_pct(p)}</span></div>')
    if orders:
        names = "; ".join(f"{k + 1}: " + " ".join(string.ascii_uppercase[int(j)] for j in o.get("order") or [])
                          for k, o in enumerate(orders))
        out.append(f'<p class="meta">{len(orders)} choice orders (thin bars; file letters in the order shown): '
                   f"{_e(names)}</p>")
    out.append("</div>")
    return out


def _floats(values) -> list[float]:
    """A record's list of numbers (selector_times, selector_scores), finite ones only; [] for anything else."""
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _nearest(seconds: list, times) -> set[int]:
    """The positions of the frames nearest each time (the first of a tie); none where frame times are unknown."""
    if not times or not seconds or seconds[0] is None:
        return set()
    return {min(range(len(seconds)), key=lambda i: abs(seconds[i] - t)) for t in times}


def _selector_note(rec: dict, support: list[float], shown: bool) -> str:
    """The frame selector's line under a contact sheet: its predicted times and scores, whether one hits a true
    support timestamp, and whose times planned the frames ("" for a record without a selector)."""
    picked, source = _floats(rec.get("selector_times")), rec.get("support_from")
    if not picked and source is None:
        return ""
    bits = []
    if picked:
        scores = _floats(rec.get("selector_scores"))
        scores = scores if len(scores) == len(picked) else [None] * len(picked)
        times = ", ".join(f"{t:.1f} s" + ("" if p is None else f" (score {p:.2f})") for t, p in zip(picked, scores))
        text = (f"selector's pick (dashed): {times}" if shown
                else f"selector's pick: {times} (frame times not recorded: not marked)")
        bits.append('<i class="key sel"></i>' + _e(text))
        if support:
            tol = rep.HIT_TOLERANCE_S
            bits.append(f"a hit (within {tol:g} s of a true support time)" if rep.hit(picked, support, tol)
                        else f"a miss (more than {tol:g} s from every true support time)")
    else:
        bits.append("no selector times recorded")
    if source is not None:
        planned = {"selector": "the selector's times", "file": "the file's support_frames"}.get(source, source)
        bits.append(_e(f"frames planned from {planned}"))
    return '<p class="meta">' + "; ".join(bits) + "</p>"


def _sheet(q: Question | None, rec: dict, thumbnails: Path | None, page_dir: Path, present: dict) -> list[str]:
    frames = [int(f) for f in rec.get("frames") or []]
    if not frames:
        return []
    seconds = rec.get("frame_seconds") or []
    seconds = seconds if len(seconds) == len(frames) else [None] * len(frames)
    per_frame = rec.get("tiles_per_frame") or []
    per_frame = per_frame if len(per_frame) == len(frames) else None
    support = list(q.support_frames) if q is not None else []
    marked = _nearest(seconds, support)  # the frame nearest each true support timestamp: a solid outline
    picked = _nearest(seconds, _floats(rec.get("selector_times")))  # each selector's pick: a dashed one
    selecting = "selector_times" in rec or "support_from" in rec
    folder = None
    if thumbnails is not None and q is not None:
        clip_dir = thumbnail_path(thumbnails, q.video_rel, 0).parent
        if clip_dir not in present:  # one directory listing per clip, not one stat per frame
            present[clip_dir] = set(os.listdir(clip_dir)) if clip_dir.is_dir() else set()
        rel = Path(os.path.relpath(clip_dir, page_dir)).as_posix()
        folder = (quote(rel), present[clip_dir])
    out = ['<div class="sheet">']
    for i, (f, t) in enumerate(zip(frames, seconds)):
        when = "" if t is None else f"{t:.1f} s"
        caption = _e(f"#{f}" + (f" · {when}" if when else ""))
        if per_frame:
            caption += f"<br>{_e(per_frame[i])} tile{'' if per_frame[i] == 1 else 's'}"
        if folder is not None and (name := thumbnail_path(thumbnails, q.video_rel, f).name) in folder[1]:
            pic = (f'<img src="{_e(folder[0] + "/" + name)}" alt="frame {f} {when}" width="96" height="54" '
                   'loading="lazy">')
        else:
            pic = f'<div class="ph">frame {f}<br>{when}</div>'
        cls = " ".join(c for c, on in (("sup", i in marked), ("sel", i in picked)) if on)
        sup = f' class="{cls}"' if cls else ""
        out.append(f'<figure{sup} data-frame="{f}">{pic}'
                   f"<figcaption>{caption}</figcaption></figure>")
    out.append("</div>")
    at = ", ".join(f"{t:.1f} s" for t in support)
    if support and selecting:  # beside the selector's line: a key tells the two outlines apart
        out.append('<p class="meta"><i class="key sup"></i>'
                   + (f"true support (solid): {at}" if marked else
                      f"true support: {at} (frame times not recorded: not marked)") + "</p>")
    elif support:
        out.append(f'<p class="meta">support frames at {at}'
                   + (" (outlined)" if marked else " (frame times not recorded: not marked)") + "</p>")
    if selecting:
        out.append(_selector_note(rec, support, bool(picked)))
    return out


def _notes(row: dict, rec: dict | None) -> list[str]:
    if rec is None:
        return ['<p class="meta err">no record: the run stopped before this question (prior answer counted)</p>']
    bits = []
    if rec.get("tiles_per_frame") is None and rec.get("tiles") is not None:
        bits.append(f"{rec['tiles']} tiles in all")
    if rec.get("visual_tokens") is not None:
        bits.append(f"{rec['visual_tokens']} visual / {rec.get('prompt_tokens', '?')} prompt tokens")
    if row.get("time_ms") is not None:
        split = rec.get("time_split_ms") or {}
        parts = ", ".join(f"{k.replace('_', '+')} {v:.0f}" for k, v in split.items() if isinstance(v, (int, float)))
        bits.append(f"time {row['time_ms']:.0f} ms" + (f" ({parts})" if parts else ""))
    out = ['<p class="meta">' + _e("; ".join(bits)) + "</p>"] if bits else []
    if rec.get("error"):
        out.append(f'<p class="meta err">error (prior answer used): {_e(rec["error"])}</p>')
    if rec.get("fallback") or rec.get("mode") == "generate-fallback-score":
        out.append('<p class="meta err">the generated text named no choice: fell back to the score answer</p>')
    if rec.get("raw") is not None:
        out.append(f'<pre>generated: {_e(rec["raw"])}</pre>')
    if rec.get("oom_retries"):
        d = rec.get("degraded") or {}
        out.append(f'<p class="meta err">out of GPU memory: answered after {_e(rec["oom_retries"])} retries with '
                   f'max_num {_e(d.get("max_num", "?"))}, max_frames {_e(d.get("max_frames", "?"))}</p>')
    if rec.get("frame_cap") is not None:
        out.append(f'<p class="meta">--sample-timeout capped this clip at {_e(rec["frame_cap"])} frames</p>')
    return out


def render_html(report: dict, questions: list[Question], records: dict[str, dict], *, thumbnails: Path | None,
                page_dir: Path, baseline: dict | None = None) -> str:
    """The page for `report` (evals.report.build_report) of `questions` answered as in `records` (by id).

    `thumbnails` is the folder of frame JPEGs (thumbnail_path), linked relative to
    `page_dir`, where the page is written; None (or a missing file) shows a
    placeholder with the frame index and time. With `baseline` (an earlier
    report), the questions the two runs answer differently come first.
    """
    by_id = {q.id: q for q in questions}
    theirs = {r["id"]: r for r in (baseline or {}).get("per_question", [])}
    rows = report["per_question"]
    changed = [r["id"] in theirs and theirs[r["id"]]["answer"] != r["answer"] for r in rows]
    order = sorted(range(len(rows)), key=lambda i: not changed[i])  # stable: file order within each group
    present: dict[Path, set[str]] = {}
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f"<title>eval report: {_e(title(report))}</title>"
             f"<style>{CSS}</style></head><body>", *_summary(report, baseline, sum(changed)),
             *_controls(report, baseline), '<div id="cards">']
    for pos, i in enumerate(order):
        row, q = rows[i], by_id.get(rows[i]["id"])
        rec = records.get(row["id"])
        probs = (rec or {}).get("probs") or {}
        conf, ptrue = probs.get(row["answer"]), probs.get(row["truth"])
        cats = " ".join(row.get("categories", []))
        cls = "card" + ("" if row["correct"] else " wrong") + (" changed" if changed[i] else "")
        parts.append(f'<section class="{cls}" data-id="{_e(row["id"])}" data-pos="{pos}" '
                     f'data-correct="{int(bool(row["correct"]))}" data-changed="{int(changed[i])}" '
                     f'data-cats="{_e(cats)}" data-n="{row["num_choices"]}" data-clip="{_e(row["clip"])}" '
                     f'data-conf="{_num(conf)}" data-ptrue="{_num(ptrue)}">')
        verdict = "right" if row["correct"] else "wrong"
        named = ", ".join(row.get("categories", [])) or "no category"
        parts.append(f'<div class="hd"><b>{_e(row["id"])}</b> · {verdict}: answered {_e(row["answer"])}, true '
                     f'{_e(row["truth"])} · {_e(named)} · {_e(row["clip"])} · {_e(row["mode"])}</div>')
        if changed[i]:
            b = theirs[row["id"]]
            parts.append(f'<p class="meta"><b>changed</b>: baseline answered {_e(b["answer"])} '
                         f'({"right" if b["correct"] else "wrong"}), this run {_e(row["answer"])} ({verdict})</p>')
        parts.append(f'<div class="q">{_e(q.question if q else "(question not in the file)")}</div>')
        parts += _choices(q, row, rec or {})
        parts += _sheet(q, rec or {}, thumbnails, Path(page_dir), present)
        parts += _notes(row, rec)
        parts.append("</section>")
    parts.append(f"</div><script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def write_html(report: dict, questions: list[Question], records: dict[str, dict], *, thumbnails: Path | None,
               page_dir: Path, baseline: dict | None = None, path: Path | None = None) -> Path:
    """render_html into `path` (default page_dir/report.html), atomically; returns the path."""
    page_dir = Path(page_dir)
    path = Path(path) if path is not None else page_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_html(report, questions, records, thumbnails=thumbnails, page_dir=page_dir,
                                        baseline=baseline))
    return path


@contextmanager
def browser():
    """Debian's headless Chromium driven by Playwright (never `playwright install`: it downloads a browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Path | str, png: Path | str, *, width: int = 1280, height: int = 1500,
               full_page: bool = False) -> Path:
    """A PNG of the page as a browser shows it (the top `height` px, or all of it with full_page)."""
    png = Path(png)
    with browser() as chromium:
        tab = chromium.new_page(viewport={"width": width, "height": height})
        tab.goto(Path(page).resolve().as_uri(), wait_until="load")
        tab.screenshot(path=str(png), full_page=full_page)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.html_report", description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", nargs=2, metavar=("PAGE", "PNG"), required=True,
                        help="write a PNG of report.html as headless Chromium renders it")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not only the top")
    args = parser.parse_args(argv)
    print(screenshot(*args.screenshot, width=args.width, height=args.height, full_page=args.full_page))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""report.html, the error browser (evals/html_report.py): structure, escaping, placeholders, a real browser."""
from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from PIL import Image, ImageDraw, ImageStat

from evals import html_report as hr
from evals.report import build_report, question_table
from roadbuddy.data.questions import load_questions

HOSTILE = """<script>alert(1)</script> </div> " ' {{ 7*7 }} </script> & done"""
HOSTILE_CLIP = """train/videos/odd "<b>" & 'x'.mp4"""


# --- a small tree from the stdlib parser: it fails on any end tag that does not close the open element -------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list["Node"]:
        return [n for n in self.iter() if n is not self and (tag is None or n.tag == tag)
                and (cls is None or cls in n.classes)]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class Tree(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>: broken structure"
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(page: str) -> Node:
    tree = Tree()
    tree.feed(page)
    tree.close()
    assert tree.cur is tree.root, f"<{tree.cur.tag}> is never closed"
    return tree.root


def cards(root: Node) -> list[Node]:
    return root.find_all("section", "card")


# --- the case: 4 questions on 2 clips (a 5th, hostile one on its own clip), records in the pipeline's schema ------

def make_case(tmp_path: Path, *, hostile: bool = False, baseline: bool = False, thumbs: bool = True,
              selector: bool = False) -> dict:
    a, b = "train/videos/clip_a.mp4", "train/videos/clip_b.mp4"
    items = [
        {"id": "t1", "question": "Biển báo nào xuất hiện đầu tiên?", "video_path": a, "support_frames": [1.1],
         "choices": ["A. Biển cấm", "B. Biển hiệu lệnh", "C. Biển chỉ dẫn", "D. Không có"],
         "answer": "B. Biển hiệu lệnh"},
        {"id": "t2", "question": "Xe có được phép rẽ trái không?", "video_path": a, "support_frames": [0.0, 2.0],
         "choices": ["A. Đúng", "B. Sai"], "answer": "A. Đúng"},
        {"id": "t3", "question": "Có bao nhiêu làn xe?", "video_path": b,
         "choices": ["A. 1", "B. 2", "C. 3"], "answer": "C. 3"},
        {"id": "t4", "question": "Tốc độ tối đa là bao nhiêu?", "video_path": b,
         "choices": ["A. 40 km/h", "B. 50 km/h", "C. 60 km/h", "D. 80 km/h"], "answer": "C. 60 km/h"},
    ]
    ts = {"decode_tiles": 12.5, "vision": 30.0, "prefill": 20.0, "question": 5.0}
    records = {
        "t1": {"id": "t1", "answer": "B", "mode": "score", "probs": {"A": 0.1, "B": 0.7, "C": 0.15, "D": 0.05},
               "orders": [{"order": [0, 1, 2, 3], "probs": {"A": 0.1, "B": 0.7, "C": 0.15, "D": 0.05}},
                          {"order": [3, 2, 1, 0], "probs": {"A": 0.05, "B": 0.2, "C": 0.65, "D": 0.1}}],
               "frames": [0, 15, 30, 45, 60], "frame_seconds": [0.0, 0.5, 1.0, 1.5, 2.0],
               "tiles_per_frame": [2, 2, 2, 2, 2], "tiles": 10, "visual_tokens": 2560, "prompt_tokens": 2700,
               "time_ms": 67.5, "time_split_ms": ts},
        "t2": {"id": "t2", "answer": "B", "mode": "score", "probs": {"A": 0.3, "B": 0.7},
               "frames": [0, 30, 60], "frame_seconds": [0.0, 1.0, 2.0], "tiles_per_frame": [1, 1, 1], "tiles": 3,
               "time_ms": 40.0, "time_split_ms": ts},
        "t3": {"id": "t3", "answer": "A", "mode": "error-prior", "error": "cannot decode clip_b.mp4", "time_ms": 1.0},
        "t4": {"id": "t4", "answer": "C", "mode": "generate-fallback-score", "fallback": True, "raw": "Tôi nghĩ là...",
               "probs": {"A": 0.1, "B": 0.2, "C": 0.6, "D": 0.1}, "frames": [3, 9], "frame_seconds": [0.1, 0.3],
               "tiles": 6, "oom_retries": 2, "degraded": {"max_num": 1, "max_frames": 8}, "frame_cap": 2,
               "time_ms": 90.0},
    }
    if selector:  # a run with --frame-selector --selector-wins: its predicted times and their scores
        records["t1"].update(selector_times=[2.2, 0.0], selector_scores=[4.2, 1.3], support_from="selector")  # a miss
        records["t2"].update(selector_times=[2.1], selector_scores=[3.0], support_from="selector")  # a hit, on 60
        records["t4"].update(selector_times=[0.3], selector_scores=[-0.5], support_from="selector")  # no support
        for r in records.values():
            if "time_split_ms" in r:
                r["time_split_ms"] = {"select": 7.5, **r["time_split_ms"]}
    if hostile:
        items.append({"id": "t5", "question": HOSTILE, "video_path": HOSTILE_CLIP, "support_frames": [0.5],
                      "choices": ["A. " + HOSTILE, "B. fine"], "answer": "B. fine"})
        records["t5"] = {"id": "t5", "answer": "A", "mode": "generate", "raw": HOSTILE, "error": HOSTILE,
                         "probs": {"A": 0.9, "B": 0.1}, "frames": [0, 12], "frame_seconds": [0.0, 0.5]}
    split = tmp_path / "data" / "train" / "train.json"
    split.parent.mkdir(parents=True)
    split.write_text(json.dumps({"data": items}, ensure_ascii=False), encoding="utf-8")
    questions = load_questions(split)
    page_dir = tmp_path / "report"
    thumbnails = page_dir / "thumbs"
    by_id = {q.id: q for q in questions}
    written = {("t1", f) for f in (0, 15, 30, 45, 60)} | {("t4", 3)} | ({("t5", 0), ("t5", 12)} if hostile else set())
    for qid, frame in written:  # t4's frame 9 is left out: its card must show a placeholder
        path = hr.thumbnail_path(thumbnails, by_id[qid].video_rel, frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        im = Image.new("RGB", (160, 90), (90, 140, 200))  # a sky, a road and the frame's index, to tell them apart
        ImageDraw.Draw(im).polygon([(0, 90), (160, 90), (90, 45), (70, 45)], fill=(70 + frame, 70, 70))
        ImageDraw.Draw(im).text((4, 4), str(frame), fill=(255, 255, 255))
        im.save(path, "JPEG")
    base = None
    if baseline:  # the baseline answers t3 and t4 differently (and t3 right): they come first
        first = build_report(question_table(questions, records))
        base = {"per_question": [dict(r) for r in first["per_question"]]}
        for r in base["per_question"]:
            if r["id"] == "t3":
                r.update(answer="C", correct=True)
            if r["id"] == "t4":
                r.update(answer="D", correct=False)
    report = build_report(question_table(questions, records), baseline=base, baseline_path="base/report.json")
    return {"questions": questions, "records": records, "report": report, "baseline": base, "page_dir": page_dir,
            "thumbnails": thumbnails if thumbs else None}


def render(case: dict) -> str:
    return hr.render_html(case["report"], case["questions"], case["records"], thumbnails=case["thumbnails"],
                          page_dir=case["page_dir"], baseline=case["baseline"])


def test_thumbnail_path_rule(tmp_path):
    # distinct clips, distinct folders (a/b.mp4, a__b.mp4 and a__b.avi once shared one)
    clips = ["a/b.mp4", "a__b.mp4", "a__b.avi", "a%2Fb.mp4", "a/b", "a%b.mp4"]
    assert len({hr.thumbnail_path(tmp_path, c, 0).parent for c in clips}) == len(clips)
    assert all(hr.thumbnail_path(tmp_path, c, 0).parent.parent == tmp_path for c in clips)  # one flat folder each
    assert hr.thumbnail_path(tmp_path, "train/videos/abc.mp4", 12) == \
        tmp_path / "train%2Fvideos%2Fabc.mp4" / "000012.jpg"
    assert hr.thumbnail_path(tmp_path, "./videos/x.y.mp4", 123456) == tmp_path / "videos%2Fx.y.mp4" / "123456.jpg"


def test_structure_letters_thumbnails_and_support_mark(tmp_path):
    case = make_case(tmp_path)
    root = parse(render(case))
    found = cards(root)
    assert [c.attrs["data-id"] for c in found] == ["t1", "t2", "t3", "t4"]
    truth = {"t1": "B", "t2": "A", "t3": "C", "t4": "C"}
    answer = {"t1": "B", "t2": "B", "t3": "A", "t4": "C"}
    for card in found:
        qid = card.attrs["data-id"]
        rows = card.find_all("div", "ch")
        assert [r.attrs["data-letter"] for r in rows if "truth" in r.classes] == [truth[qid]]
        assert [r.attrs["data-letter"] for r in rows if "pred" in r.classes] == [answer[qid]]
        tags = {r.attrs["data-letter"]: [t.text() for t in r.find_all("span", "tag")] for r in rows}
        assert "true" in tags[truth[qid]] and "predicted" in tags[answer[qid]]
        assert sum(len(t) for t in tags.values()) == 2
        assert ("wrong" in card.classes) == (truth[qid] != answer[qid])
    t1, t2, t3, t4 = found
    # the choices as in the file, labels included; the marks follow the text
    texts = [r.find_all("span")[0].text() for r in t1.find_all("div", "ch")]
    assert texts == ["A. Biển cấm", "B. Biển hiệu lệnhtruepredicted", "C. Biển chỉ dẫn", "D. Không có"]
    # t1's contact sheet: every frame's thumbnail in frame order, linked relative to the page
    srcs = [img.attrs["src"] for img in t1.find_all("img")]
    expected = [quote(os.path.relpath(hr.thumbnail_path(case["thumbnails"], "train/videos/clip_a.mp4", f),
                                      case["page_dir"])) for f in (0, 15, 30, 45, 60)]
    assert srcs == expected == [f"thumbs/train%252Fvideos%252Fclip_a.mp4/{f:06d}.jpg" for f in (0, 15, 30, 45, 60)]
    assert all((case["page_dir"] / unquote(s)).is_file() for s in srcs)  # a URL: its "%" is quoted
    # support at 1.1 s: frame 30 (1.0 s) is the nearest; t2's 0.0 s and 2.0 s mark its first and last frames
    assert [f.attrs["data-frame"] for f in t1.find_all("figure") if "sup" in f.classes] == ["30"]
    assert [f.attrs["data-frame"] for f in t2.find_all("figure") if "sup" in f.classes] == ["0", "60"]
    assert "support frames at 1.1 s" in t1.text()
    # two choice orders: two thin bars beside each choice's main bar
    assert len(t1.find_all("div", "ch")[0].find_all("span", "o")) == 2
    assert "tiles in all" not in t1.text() and "#30 · 1.0 s2 tiles" in t1.text()
    # the error, the fallback with its raw text, the OOM retries and the frame cap are said in words
    assert "cannot decode clip_b.mp4" in t3.text() and not t3.find_all("figure")
    text4 = t4.text()
    for words in ("fell back to the score answer", "Tôi nghĩ là", "after 2 retries", "max_num 1", "at 2 frames",
                  "6 tiles in all"):
        assert words in text4
    # t4's frame 9 has no thumbnail file: a placeholder, not a broken image
    assert [i.attrs["src"].rsplit("/", 1)[1] for i in t4.find_all("img")] == ["000003.jpg"]
    (ph,) = t4.find_all("div", "ph")
    assert [c if isinstance(c, str) else c.tag for c in ph.children] == ["frame 9", "br", "0.3 s"]
    # the summary figures
    top = root.find_all("div", "sum")[0].text()
    assert "Accuracy 50.0% (2/4; 95% CI" in top and "4 questions from 2 clips" in top and "Prior baseline" in top
    assert len(root.find_all("script")) == 1


def test_no_selector_keeps_the_page_as_it_was(tmp_path):
    page = render(make_case(tmp_path))
    root = parse(page)
    assert not [f for f in root.find_all("figure") if "sel" in f.classes] and not root.find_all("i", "key")
    assert "selector" not in " ".join(c.text() for c in cards(root)) and "planned from" not in page


def test_selector_picks_outlined_beside_the_true_support(tmp_path):
    case = make_case(tmp_path, selector=True)
    root = parse(render(case))
    t1, t2, t3, t4 = cards(root)

    def marks(card):
        return {f.attrs["data-frame"]: sorted(f.classes) for f in card.find_all("figure") if f.classes}

    # t1: true support 1.1 s on frame 30; the picks 2.2 s and 0.0 s (both 1.1 s off it) on frames 60 (2.0 s) and 0
    assert marks(t1) == {"0": ["sel"], "30": ["sup"], "60": ["sel"]}
    # t2: support at 0.0 s and 2.0 s, the pick at 2.1 s: frame 60 carries both marks
    assert marks(t2) == {"0": ["sup"], "60": ["sel", "sup"]}
    assert marks(t4) == {"9": ["sel"]} and not t3.find_all("figure")  # t4's 0.3 s pick, no support
    lines = {c.attrs["data-id"]: [p.text() for p in c.find_all("p", "meta")] for c in (t1, t2, t4)}
    # a key for each outline, then the times and scores, whether a pick hits, and whose times planned the frames
    assert "true support (solid): 1.1 s" in lines["t1"]
    assert ("selector's pick (dashed): 2.2 s (score 4.20), 0.0 s (score 1.30); a miss (more than 1 s from every "
            "true support time); frames planned from the selector's times") in lines["t1"]
    assert "true support (solid): 0.0 s, 2.0 s" in lines["t2"]
    assert ("selector's pick (dashed): 2.1 s (score 3.00); a hit (within 1 s of a true support time); frames "
            "planned from the selector's times") in lines["t2"]
    assert "selector's pick (dashed): 0.3 s (score -0.50); frames planned from the selector's times" in lines["t4"]
    for card in (t1, t2):
        (sup,) = [p for p in card.find_all("p", "meta") if p.find_all("i", "sup")]
        (sel,) = [p for p in card.find_all("p", "meta") if p.find_all("i", "sel")]
        assert sup.text().startswith("true support") and sel.text().startswith("selector's pick")
    assert not t4.find_all("i", "sup")  # no true support: no key for it
    assert "time 68 ms (select 8, decode+tiles 12, vision 30" in t1.text()


def test_selector_without_frame_times_or_scores(tmp_path):
    case = make_case(tmp_path, selector=True)
    case["records"]["t1"].pop("frame_seconds")  # nothing to place the marks by
    case["records"]["t1"].pop("selector_scores")
    case["records"]["t2"].pop("selector_times")  # the file's support_frames planned it: no selector times
    case["records"]["t2"].update(support_from="file")
    t1, t2, _, _ = cards(parse(render(case)))
    assert not [f for f in t1.find_all("figure") if f.classes]
    assert "selector's pick: 2.2 s, 0.0 s (frame times not recorded: not marked); a miss" in t1.text()
    assert "true support: 1.1 s (frame times not recorded: not marked)" in t1.text()
    assert [sorted(f.classes) for f in t2.find_all("figure") if f.classes] == [["sup"], ["sup"]]
    assert "no selector times recorded; frames planned from the file's support_frames" in t2.text()


def test_baseline_changed_questions_first(tmp_path):
    case = make_case(tmp_path, baseline=True)
    root = parse(render(case))
    found = cards(root)
    assert [c.attrs["data-id"] for c in found] == ["t3", "t4", "t1", "t2"]
    assert [c.attrs["data-changed"] for c in found] == ["1", "1", "0", "0"]
    assert "baseline answered C (right), this run A (wrong)" in found[0].text()
    assert "baseline answered D (wrong), this run C (right)" in found[1].text()
    top = root.find_all("div", "sum")[0].text()
    assert "1 wins, 1 losses, McNemar p = 1" in top and "2 questions answered differently" in top


def test_hostile_text_stays_text(tmp_path):
    case = make_case(tmp_path, hostile=True)
    page = render(case)
    root = parse(page)  # raises on any end tag the data would have injected
    assert len(root.find_all("script")) == 1
    card = next(c for c in cards(root) if c.attrs["data-id"] == "t5")
    assert card.find_all("div", "q")[0].text() == HOSTILE
    assert card.find_all("div", "ch")[0].find_all("span")[0].text().startswith("A. " + HOSTILE)
    assert card.attrs["data-clip"] == HOSTILE_CLIP
    assert HOSTILE in card.find_all("pre")[0].text() and "error (prior answer used): " + HOSTILE in card.text()
    assert "<script>alert" not in page and "</div> \"" not in page
    assert "{{ 7*7 }}" in page and "49" not in card.text()
    # the clip's thumbnails are linked through a URL-quoted, attribute-escaped path that still finds the files
    srcs = [i.attrs["src"] for i in card.find_all("img")]
    assert len(srcs) == 2 and all('"' not in s and "<" not in s for s in srcs)
    from urllib.parse import unquote
    assert all((case["page_dir"] / unquote(s)).is_file() for s in srcs)
    # the clip filter's option carries the raw clip name as its value
    assert HOSTILE_CLIP in [o.attrs["value"] for o in root.find_all("option")]
    assert len(cards(root)) == 5


def test_no_thumbnails_placeholders(tmp_path):
    case = make_case(tmp_path, thumbs=False)
    root = parse(render(case))
    assert len(cards(root)) == 4 and not root.find_all("img")
    frames = {"t1": [(0, "0.0"), (15, "0.5"), (30, "1.0"), (45, "1.5"), (60, "2.0")],
              "t2": [(0, "0.0"), (30, "1.0"), (60, "2.0")], "t3": [], "t4": [(3, "0.1"), (9, "0.3")]}
    for card in cards(root):
        want = [(f"frame {f}", f"{t} s") for f, t in frames[card.attrs["data-id"]]]
        assert [(p.children[0], p.children[-1]) for p in card.find_all("div", "ph")] == want
        assert card.find_all("div", "q")[0].text()


def test_write_html_atomic_default_path(tmp_path):
    case = make_case(tmp_path)
    path = hr.write_html(case["report"], case["questions"], case["records"], thumbnails=case["thumbnails"],
                         page_dir=case["page_dir"])
    assert path == case["page_dir"] / "report.html" and path.read_text(encoding="utf-8") == render(case)
    assert [p.name for p in case["page_dir"].iterdir() if p.name.startswith(".")] == []


# --- a real browser -----------------------------------------------------------------------------------------------

def _require_browser():
    if not Path(hr.CHROMIUM).is_file():
        pytest.skip(f"{hr.CHROMIUM} not found (CI installs Debian's chromium; apt-get install chromium)")
    pytest.importorskip("playwright.sync_api",
                        reason="the playwright package is not installed (pip install -e '.[test]')")


def test_page_in_headless_chromium(tmp_path):
    _require_browser()
    case = make_case(tmp_path, hostile=True)
    page_path = hr.write_html(case["report"], case["questions"], case["records"], thumbnails=case["thumbnails"],
                              page_dir=case["page_dir"])
    problems = []
    with hr.browser() as chromium:
        tab = chromium.new_page(viewport={"width": 1280, "height": 1000})
        tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        tab.goto(page_path.as_uri(), wait_until="load")
        tab.wait_for_function("Array.from(document.querySelectorAll('.card')[0].querySelectorAll('img'))"
                              ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
        png = tmp_path / "page.png"
        tab.screenshot(path=str(png))
        with Image.open(png) as im:
            var = ImageStat.Stat(im.convert("L")).var[0]
            assert im.size == (1280, 1000) and var > 100, f"the screenshot looks blank (variance {var:.1f})"
        assert problems == []
        first = case["questions"][0]
        assert tab.locator(".card .q").first.inner_text() == first.question
        assert tab.locator(".card").count() == 5
        visible = ("Array.from(document.querySelectorAll('.card'))"
                   ".filter(c => c.checkVisibility()).map(c => c.dataset.id)")
        assert tab.evaluate(visible) == ["t1", "t2", "t3", "t4", "t5"]
        tab.click("#f-wrong")
        wrong = [r["id"] for r in case["report"]["per_question"] if not r["correct"]]
        assert wrong == ["t2", "t3", "t5"] and tab.evaluate(visible) == wrong
        assert tab.inner_text("#count") == "3 of 5 questions shown"
        tab.select_option("#sort", "conf:desc")  # t5 0.9, t2 0.7 (t3 has no probabilities: last)
        assert tab.evaluate(visible) == ["t5", "t2", "t3"]
        tab.click("#f-wrong")
        tab.select_option("#f-n", "3")
        assert tab.evaluate(visible) == ["t3"]
        assert tab.evaluate("document.querySelectorAll('script').length") == 1
    assert problems == []


def test_selector_outlines_in_headless_chromium(tmp_path):
    """The two marks as a browser draws them: the true support a solid orange outline, the selector's pick a
    dashed border of another colour inside the frame, both on a frame that carries both, and the keys alike."""
    _require_browser()
    case = make_case(tmp_path, selector=True)
    page_path = hr.write_html(case["report"], case["questions"], case["records"], thumbnails=case["thumbnails"],
                              page_dir=case["page_dir"])
    # each element's outline and border (style, and colour where drawn) and its size
    style = """sel => Array.from(document.querySelectorAll(sel)).map(e => { const s = getComputedStyle(e);
        const r = e.getBoundingClientRect();
        return [s.outlineStyle, s.outlineStyle === 'none' ? null : s.outlineColor, s.borderTopStyle,
                s.borderTopStyle === 'none' ? null : s.borderTopColor, r.width, r.height]; })"""
    with hr.browser() as chromium:
        tab = chromium.new_page(viewport={"width": 1280, "height": 1000})
        tab.goto(page_path.as_uri(), wait_until="load")
        t1, t2 = ".card[data-id=t1] ", ".card[data-id=t2] "
        plain = tab.evaluate(style, t1 + "figure[data-frame='15'] img")
        sup = tab.evaluate(style, t1 + "figure[data-frame='30'] img")
        sel = tab.evaluate(style, t1 + "figure[data-frame='60'] img")
        both = tab.evaluate(style, t2 + "figure[data-frame='60'] img")
        keys = tab.evaluate(style, t1 + ".key.sup") + tab.evaluate(style, t1 + ".key.sel")
        png = tmp_path / "selector.png"
        tab.locator(".card[data-id=t2] .sheet").screenshot(path=str(png))
    assert plain == [["none", None, "none", None, 96, 54]]
    orange, magenta = "rgb(238, 153, 0)", "rgb(204, 51, 204)"
    assert sup == [["solid", orange, "none", None, 96, 54]]
    assert sel == [["none", None, "dashed", magenta, 96, 54]]  # inside the frame: the sheet keeps its size
    assert both == [["solid", orange, "dashed", magenta, 96, 54]]
    assert [k[:4] for k in keys] == [["none", None, "solid", orange], ["none", None, "dashed", magenta]]
    with Image.open(png) as im:  # the marked frame shows both colours
        colours = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    for want in ((238, 153, 0), (204, 51, 204)):
        assert any(sum(abs(a - b) for a, b in zip(c, want)) < 60 for c in colours), want

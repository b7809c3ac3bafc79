"""The model side of answering: a prepared clip's questions -> one record per question.

Three paths, the same answers (tests compare them):
- shared prefix (default): the vision tower runs once per clip, each frame set's prefix is prefilled once,
  and in score mode the questions' suffixes go through one packed forward on that cache;
- one question at a time on the shared prefix (`--no-batch-questions`, generate mode, flash attention);
- plain (`--no-share-prefix`): every question re-encodes its frames and prefills its whole prompt.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question, prior_letter
from roadbuddy.families.decoding import greedy, letter_probs, new_cache, rewind
from roadbuddy.families.loaded import LoadedModel
from roadbuddy.levers import choice_orders
from roadbuddy.predict import answers
from roadbuddy.predict.inputs import PreparedClip

# a record's time_split_ms: its shares of the clip's frame selector (--frame-selector: the scan's decode and
# scores; 0 without one), decode and tiling, vision tower and prefill, and its own pass
TIME_STEPS = ("select", "decode_tiles", "vision", "prefill", "question")


def _sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def answer_clip(lm: LoadedModel, clip: PreparedClip, cfg: RunConfig,
                prior: dict[int, list[float]] | None = None) -> Iterator[dict]:
    """Answer every question of a prepared clip, yielding each record as soon as it is made. With
    --permutations each question is asked in each of its orders (one suffix each); `prior` (number of
    choices -> position prior) is divided out of the probabilities (--debias)."""
    family = lm.ops
    vision_ms = 0.0
    features = None
    if cfg.share_prefix:
        t = time.perf_counter()
        features = family.encode(lm, clip, cfg.vision_batch)  # None where the family's prefill runs the tower
        _sync(lm)
        vision_ms = (time.perf_counter() - t) * 1000
    n = len(clip.questions)

    for group in clip.groups:
        asks = {q.id: [(order, ids.to(lm.device)) for order, ids in
                       (group.asks.get(q.id) or [(tuple(range(q.num_choices)), group.suffix_ids[q.id])])]
                for q in group.questions}
        group_ms = 0.0
        if cfg.share_prefix:
            t = time.perf_counter()
            cache = new_cache(lm)
            _, start = family.prefill(lm, clip, group, features, cache, cfg.prefill_chunk, batch=cfg.vision_batch)
            prefix_len = int(cache.get_seq_length())
            _sync(lm)
            group_ms = (time.perf_counter() - t) * 1000
        flat = [(q.id, k, ids) for q in group.questions for k, (_, ids) in enumerate(asks[q.id])]
        packed = {}
        if cfg.share_prefix and cfg.batch_questions and cfg.answer_mode == "score" and family.can_pack(lm):
            packed = _packed_logits(lm, [ids for _, _, ids in flat], [(qid, k) for qid, k, _ in flat], cache,
                                    prefix_len, start, cfg.prefill_chunk)
        for q in group.questions:
            t = time.perf_counter()
            pass_ms, asked = 0.0, []
            for k, (order, suffix_ids) in enumerate(asks[q.id]):
                if (q.id, k) in packed:
                    run = cache  # a packed suffix read its logits; generate mode does not pack
                    logits, share = packed[(q.id, k)]
                    pass_ms += share
                    after = start + suffix_ids.shape[1]
                elif cfg.share_prefix:  # the prefix's cache, or a copy of its state where it cannot be cut back
                    run = family.branch(cache)
                    logits = family.extend(lm, suffix_ids, run, start)
                    after = start + suffix_ids.shape[1]
                else:  # the plain path: re-encode this question's frames, prefill the whole prompt
                    run = new_cache(lm)
                    logits, after = family.prefill(lm, clip, group, None, run, cfg.prefill_chunk, suffix=suffix_ids,
                                                   batch=cfg.vision_batch)
                if len(asks[q.id]) == 1:
                    record = answer_record(lm, q, logits, run, cfg, prior, after)
                else:
                    asked.append((order, letter_logprobs(lm, logits, q.letters)))
                if cfg.share_prefix and run is cache:
                    rewind(cache, prefix_len)
            if asked:
                record = ensemble_record(q, asked, prior)
            _sync(lm)
            own_ms = (time.perf_counter() - t) * 1000 + pass_ms
            suffix_tokens = sum(int(ids.shape[1]) for _, ids in asks[q.id])
            # this question's time, split by step (the shares add up to time_ms): its share of the clip's frame
            # selector, decode and tiling, of the vision tower and of its frame set's prefill, and its own forward
            # (on the plain path that holds its vision tower and whole prefill)
            split = dict(zip(TIME_STEPS, (round(clip.select_ms / n, 3), round(clip.prepare_ms / n, 3),
                                          round(vision_ms / n, 3), round(group_ms / len(group.questions), 3),
                                          round(own_ms, 3))))
            if cfg.frame_selector is not None:
                record.update(selector_record(q, clip))
            record.update(
                frames=list(group.frames),
                frame_seconds=clip.seconds(group.frames),
                tiles_per_frame=list(group.tiles_per_frame),
                tiles=group.tiles,
                visual_tokens=group.visual_tokens,
                prompt_tokens=int(group.prefix_ids.shape[1] + suffix_tokens),
                time_ms=round(sum(split.values()), 3),
                time_split_ms=split,
            )
            yield record


def _packed_logits(lm: LoadedModel, suffixes: list[torch.Tensor], keys: list, cache, prefix_len: int, start: int,
                   max_tokens: int) -> dict:
    """Next-token logits of every suffix that shares a forward pass with another, by its key (question id
    and order), with its share of that pass in ms; a suffix alone in its pack is left out (it takes the
    one-suffix path)."""
    out = {}
    for pack in question_packs(suffixes, max_tokens):
        if len(pack) < 2:
            continue
        t = time.perf_counter()
        logits = lm.ops.extend_packed(lm, [suffixes[i] for i in pack], cache, start)
        rewind(cache, prefix_len)
        _sync(lm)
        share = (time.perf_counter() - t) * 1000 / len(pack)
        out.update({keys[i]: (logits[j], share) for j, i in enumerate(pack)})
    return out


def question_packs(suffixes: list[torch.Tensor], max_tokens: int) -> list[list[int]]:
    """Consecutive questions grouped so each group's suffix tokens stay within `max_tokens` (0 = no bound);
    a question longer than that goes alone. The pipeline passes the prefill chunk: a pack then attends
    to at most the prefix plus a chunk's worth of tokens, as the prefill's last chunk did, so its
    activations and attention scores never exceed the prefill's (the peak the VRAM estimate covers)."""
    packs: list[list[int]] = []
    tokens = 0
    for i, suffix in enumerate(suffixes):
        n = suffix.shape[1]
        if not packs or (max_tokens > 0 and tokens + n > max_tokens):
            packs.append([])
            tokens = 0
        packs[-1].append(i)
        tokens += n
    return packs


def _rounded(probs: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in probs.items()}


def letter_logprobs(lm: LoadedModel, logits: torch.Tensor, letters: tuple[str, ...]) -> dict[str, float]:
    """Log-softmax over the next-token logits of this question's valid letters, in float32 whatever the
    model's dtype: --debias estimates the letter prior from these, and a confident model's wrong letters
    are 15-20 logits down, where probabilities rounded for a record are 0."""
    ids = [lm.letter_ids[letter] for letter in letters]
    logs = torch.log_softmax(logits[ids].float(), dim=-1)
    return {letter: float(v) for letter, v in zip(letters, logs)}


def answer_record(lm: LoadedModel, q: Question, logits: torch.Tensor, cache, cfg: RunConfig,
                  prior: dict[int, list[float]] | None = None, start: int | None = None) -> dict:
    """The record of one answer: the scored letter and its probabilities (with the position prior divided
    out, --debias); in generate mode the greedy text, parsed, with the scored letter as the recorded
    fallback when it names no letter."""
    probs = letter_probs(lm, logits, q.letters)
    logs = letter_logprobs(lm, logits, q.letters)
    record = {"id": q.id, "mode": "score"}
    if prior is not None and q.num_choices in prior:
        record["observed_probs"] = _rounded(probs)
        probs = choice_orders.debias(probs, prior[q.num_choices])
        logs = choice_orders.log_debias(logs, prior[q.num_choices])
    scored = max(probs, key=probs.get)
    record.update(answer=scored, probs=_rounded(probs), logprobs=logs)
    if cfg.answer_mode == "generate":
        text = greedy(lm, logits, cache, cfg.max_new_tokens, start)
        parsed = answers.parse_answer(text, q.choices)
        record.update(raw=text, mode="generate")
        if parsed is None:
            record.update(mode="generate-fallback-score", fallback=True)
        else:
            record["answer"] = parsed
    return record


def ensemble_record(q: Question, asked: list[tuple[tuple[int, ...], dict[str, float]]],
                    prior: dict[int, list[float]] | None = None) -> dict:
    """The record of a question asked in several orders, from each order's log-probabilities by shown letter:
    what the model said in each order (`orders`: probabilities rounded, log-probabilities at full precision,
    which --debias estimates its prior from), their mean per file choice, and its best letter. With a
    position prior (--debias) it is divided out of each order before the mean, and the mean of what the
    model said is kept as `observed_probs`, as for a question asked once."""
    observed = [(order, {letter: math.exp(v) for letter, v in logs.items()}) for order, logs in asked]
    probs = choice_orders.ensemble(observed)
    logs = choice_orders.log_ensemble(asked)
    record = {"id": q.id, "mode": "score"}
    if prior is not None and q.num_choices in prior:
        record["observed_probs"] = _rounded(probs)
        probs = choice_orders.ensemble([(order, choice_orders.debias(shown, prior[q.num_choices]))
                                        for order, shown in observed])
        logs = choice_orders.log_ensemble([(order, choice_orders.log_debias(shown, prior[q.num_choices]))
                                           for order, shown in asked])
    record.update(answer=choice_orders.pick(probs), probs=_rounded(probs), logprobs=logs,
                  orders=[{"order": list(order), "probs": _rounded(shown), "logprobs": dict(logs)}
                          for (order, shown), (_, logs) in zip(observed, asked)])
    return record


def selector_record(q: Question, clip: PreparedClip) -> dict:
    """--frame-selector: which timestamps planned the question's frames (`support_from`: selector or file) and, where
    the selector planned them, its predicted times (seconds, best first) and its logits there."""
    picks = clip.predicted.get(q.id)
    if picks is None:
        return {"support_from": "file"}
    record = {"support_from": "selector", "selector_times": [round(t, 3) for t, _ in picks],
              "selector_scores": [round(v, 4) for _, v in picks]}
    if clip.selector_error:
        record["selector_error"] = clip.selector_error
    return record


def error_records(clip: PreparedClip) -> list[dict]:
    """The prior answer for each of the clip's questions, with the reason it could not be answered."""
    return [{"id": q.id, "answer": prior_letter(q.num_choices), "mode": "error-prior", "error": clip.error,
             "time_ms": round((clip.select_ms + clip.prepare_ms) / len(clip.questions), 3)} for q in clip.questions]

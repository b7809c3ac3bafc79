"""Qwen3-VL, Qwen2.5-VL and Qwen3.5 through the family seam, on tiny random checkpoints with the published processor
settings (roadbuddy.testing.qwen_checkpoints): the project's inputs are the processor's for the same frames,
and every speed path gives the processor's whole-prompt logits.

The reference in each test is built here from the public API alone: the checkpoint's chat template
(`processor.apply_chat_template`), its processor on the decoded frames with their real indices and the
clip's fps (`do_sample_frames=False`), and `model(**inputs)`, positions and all left to transformers.
Tolerance: 1e-5 on logits of order 0.1 (float32, CPU). Measured agreement is about 1e-7; a suffix one
position off, or started at the cache length, moves the logits by 5e-4 or more (FAMILIES.md §5).
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.data.questions import group_by_video, load_questions
from roadbuddy.families import registry, wording
from roadbuddy.families.decoding import new_cache, rewind
from roadbuddy.levers import choice_orders
from roadbuddy.predict import answering, inputs
from roadbuddy.testing.qwen_checkpoints import write_tiny_qwen_checkpoint

FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen3_5")
ATOL = 1e-5
# --max-num 1's pixel budget per frame, written out: one 448 x 448 InternVL tile's area. Qwen3-VL's processor
# bounds the whole clip (frames x budget), Qwen2.5-VL's each frame; the floors are the published processors'.
BUDGET = 448 * 448
FLOOR = {"qwen3_vl": 4096, "qwen2_5_vl": 3136, "qwen3_5": 4096}
CLIP_WIDE = ("qwen3_vl", "qwen3_5")  # Qwen3.5 takes Qwen3-VL's processor
# Qwen3.5's template opens the assistant turn thinking unless told not to; the project answers without
TEMPLATE = {"qwen3_5": {"enable_thinking": False}}


def reference_size(family: str, frames: int, max_num: int = 1) -> dict:
    per_frame = BUDGET * max_num
    return {"shortest_edge": FLOOR[family],
            "longest_edge": per_frame * frames if family in CLIP_WIDE else per_frame}


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request, tmp_path_factory):
    directory = write_tiny_qwen_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    return registry.load_model(RunConfig(model=str(directory), device="cpu"))


@pytest.fixture(scope="module")
def clip_questions(synthetic_dataset):
    """The synthetic clip with three questions (4 and 2 choices; each with a support timestamp)."""
    by_video = dict(group_by_video(load_questions(synthetic_dataset)))
    video, questions = next((v, qs) for v, qs in by_video.items() if len(qs) == 3)
    return video, questions


def reference_inputs(lm, clip, frames, question, cfg, detail=()) -> dict:
    """The processor's whole prompt for these frames and this question, from the chat template; `detail` frames
    go after the video as images of at most --detail-max-num x 448 x 448 pixels."""
    system = wording.system_text(cfg.system_prompt)
    text = wording.question_text(question.question, question.choices, simple=cfg.simple_prompts)
    messages = [] if system is None else [{"role": "system", "content": [{"type": "text", "text": system}]}]
    messages.append({"role": "user", "content": [{"type": "video"}, *[{"type": "image"}] * len(detail),
                                                 {"type": "text", "text": text}]})
    prompt = lm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                              **TEMPLATE.get(lm.family, {}))
    if lm.family in CLIP_WIDE:  # the template's pair around the video goes, as transformers 5.25's processor drops
        # it itself (5.17's kept it; the project drops it on every release: the test at the end of this file)
        prompt = prompt.replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
    video = np.stack([clip.decoded[f] for f in frames])
    metadata = {"fps": clip.fps, "frames_indices": list(frames), "total_num_frames": clip.num_frames}
    images = {}
    if detail:
        floor = lm.processor.image_processor.size.shortest_edge
        images = {"images": [clip.decoded[f] for f in sorted(detail)],
                  "images_kwargs": {"size": {"shortest_edge": floor, "longest_edge": BUDGET * cfg.detail_max_num}}}
    return lm.processor(text=[prompt], videos=[video], video_metadata=[metadata], do_sample_frames=False,
                        videos_kwargs={"size": reference_size(lm.family, len(frames), cfg.max_num)},
                        return_tensors="pt", **images)


def reference_logits(lm, model_inputs) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(**model_inputs, use_cache=False).logits[0, -1].float()


def suffix_logits(lm, cache, start: int, suffixes: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each suffix's next-token logits after the cached prefix: alone (on the family's branch of the cache) and,
    where the family packs, side by side in one forward; the prefix's cache is left as prefilled."""
    prefix_len = int(cache.get_seq_length())
    out = {"one": []}
    for suffix in suffixes:
        run = lm.ops.branch(cache)
        out["one"].append(lm.ops.extend(lm, suffix, run, start))
        if run is cache:
            rewind(cache, prefix_len)
    if lm.ops.can_pack(lm):
        out["packed"] = list(lm.ops.extend_packed(lm, suffixes + suffixes[:1], cache, start))[:len(suffixes)]
        rewind(cache, prefix_len)
        # the prefix's cache is as prefilled after the pack (cut back, or never touched: Qwen3.5 batches copies)
        out["after packing"] = [lm.ops.extend(lm, suffixes[0], lm.ops.branch(cache), start)]
        rewind(cache, prefix_len)
    return out


def letters_of(lm, logits, question) -> torch.Tensor:
    return logits[[lm.letter_ids[letter] for letter in question.letters]]


@pytest.mark.parametrize("support", [False, True])
def test_shared_prefix_logits_are_the_processors_whole_prompt_logits(lm, clip_questions, support):
    """Per frame set: the prefix prefilled once, each question's suffix from the last prefix position + 1, alone
    and packed side by side, equal the processor's prompt through model(**inputs); so does the plain path."""
    video, questions = clip_questions
    cfg = RunConfig(model="tiny", device="cpu", support_frames=support, min_frames=5, max_frames=5)
    clip = inputs.prepare_clip(video, questions, cfg, inputs.InputSpec.of(lm))
    assert clip.error is None
    assert (len(clip.groups) > 1) == support  # support windows give questions frame sets of their own
    family = lm.ops
    checked = 0
    for group in clip.groups:
        cache = new_cache(lm)
        _, start = family.prefill(lm, clip, group, None, cache)
        assert start < group.prefix_ids.shape[1]  # a frame pair's tokens take fewer positions: not the cache length
        suffixes = [group.suffix_ids[q.id] for q in group.questions]
        paths = suffix_logits(lm, cache, start, suffixes)
        for i, q in enumerate(group.questions):
            ref_inputs = reference_inputs(lm, clip, group.frames, q, cfg)
            assert torch.equal(ref_inputs["input_ids"], torch.cat([group.prefix_ids, suffixes[i]], dim=1)), q.id
            ref = reference_logits(lm, ref_inputs)
            plain, _ = family.prefill(lm, clip, group, None, new_cache(lm), suffix=suffixes[i])
            for name, logits in [(name, each[i]) for name, each in paths.items() if i < len(each)] + [("plain", plain)]:
                assert torch.allclose(letters_of(lm, logits, q), letters_of(lm, ref, q), atol=ATOL, rtol=0), \
                    (name, q.id)
                assert torch.allclose(logits, ref, atol=ATOL, rtol=0), (name, q.id)
            checked += 1
    assert checked == 3


def test_sparse_frames_start_the_suffix_at_the_last_prefix_position_not_the_largest(lm, clip_questions, tmp_path):
    """Four frames of a 30 s clip: Qwen2.5-VL's temporal positions step by tokens_per_second x 15 s per pair, so
    the prefix's largest position lies inside the video, past its last token's; the suffix must start after the
    last token (where the processor's whole prompt puts it), and does, on every path."""
    import dataclasses

    from roadbuddy.testing.synth import write_road_clip

    video = write_road_clip(tmp_path / "long.mp4", seconds=30, fps=10, width=128, height=72, light="red")
    _, questions = clip_questions
    asked = [dataclasses.replace(q, video_path=video, support_frames=()) for q in questions[:2]]
    cfg = RunConfig(model="tiny", device="cpu", min_frames=4, max_frames=4, simple_prompts=True)  # no intro after
    clip = inputs.prepare_clip(video, asked, cfg, inputs.InputSpec.of(lm))
    (group,) = clip.groups
    from roadbuddy.families.qwen_vl.model import positions

    pos, _ = positions(lm, group.prefix_ids, group.vision)
    if lm.family == "qwen2_5_vl":
        assert int(pos.max()) > int(pos[0, 0, -1])  # the trap is there to fall into
    cache = new_cache(lm)
    _, start = lm.ops.prefill(lm, clip, group, None, cache)
    assert start == int(pos[0, 0, -1]) + 1
    paths = suffix_logits(lm, cache, start, [group.suffix_ids[q.id] for q in asked])
    for i, q in enumerate(asked):
        ref = reference_logits(lm, reference_inputs(lm, clip, group.frames, q, cfg))
        for name, each in paths.items():
            if i < len(each):
                assert torch.allclose(each[i], ref, atol=ATOL, rtol=0), (name, q.id)


def test_detail_frames_are_images_after_the_video_and_the_logits_are_the_processors(lm, clip_questions, tmp_path):
    """--detail-frames 1 on Qwen: each question's detail frame (nearest its support timestamp) follows the video as
    an image of up to --detail-max-num x 448 x 448 pixels; the prompt, the token count the budget plans with
    and the logits (one suffix, packed, plain) are the processor's for that conversation. 1280 x 720 frames,
    so both pixel budgets bind."""
    import dataclasses

    from roadbuddy.testing.synth import write_road_clip

    video = write_road_clip(tmp_path / "hd.mp4", seconds=2, fps=10, width=1280, height=720, light="green")
    questions = [dataclasses.replace(q, video_path=video) for q in clip_questions[1]]
    cfg = RunConfig(model="tiny", device="cpu", min_frames=4, max_frames=4, detail_frames=1, detail_max_num=2)
    spec = inputs.InputSpec.of(lm)
    clip = inputs.prepare_clip(video, questions, cfg, spec)
    assert clip.error is None and all(g.detail_frames and "pixel_values" in g.vision for g in clip.groups)
    for group in clip.groups:
        cache = new_cache(lm)
        _, start = lm.ops.prefill(lm, clip, group, None, cache)
        suffixes = [group.suffix_ids[q.id] for q in group.questions]
        paths = suffix_logits(lm, cache, start, suffixes)
        assert group.visual_tokens == spec.ops.visual_tokens(spec, 1280, 720, 4, 1, cfg)
        assert group.visual_tokens > spec.ops.visual_tokens(spec, 1280, 720, 4, 1, cfg.replace(detail_max_num=1))
        assert group.tiles_per_frame == [1 + (f in group.detail_frames) for f in group.frames]
        for i, q in enumerate(group.questions):
            ref_inputs = reference_inputs(lm, clip, group.frames, q, cfg, detail=group.detail_frames)
            assert torch.equal(ref_inputs["input_ids"], torch.cat([group.prefix_ids, suffixes[i]], dim=1)), q.id
            ref = reference_logits(lm, ref_inputs)
            plain, _ = lm.ops.prefill(lm, clip, group, None, new_cache(lm), suffix=suffixes[i])
            for name, logits in [(name, each[i]) for name, each in paths.items() if i < len(each)] + [("plain", plain)]:
                assert torch.allclose(logits, ref, atol=ATOL, rtol=0), (name, q.id)


def test_pair_timestamps_and_spacing_come_from_the_frames_real_times(lm, clip_questions):
    """Qwen3-VL writes each frame pair's mean time (frame index / fps) before it; Qwen2.5-VL spaces the pairs by
    2 / (frames / source frames x fps). Both from the clip's own fps and frame count, not a guessed fps."""
    video, questions = clip_questions
    cfg = RunConfig(model="tiny", device="cpu", support_frames=False, min_frames=4, max_frames=4)
    clip = inputs.prepare_clip(video, questions, cfg, inputs.InputSpec.of(lm))
    (group,) = clip.groups
    frames = group.frames
    assert clip.fps == 10 and clip.num_frames == 20 and len(frames) == 4
    if lm.family in CLIP_WIDE:
        text = lm.tokenizer.decode(group.prefix_ids[0])
        stamps = [f"<{(frames[i] / clip.fps + frames[i + 1] / clip.fps) / 2:.1f} seconds>" for i in (0, 2)]
        assert [m for m in stamps if m in text] == stamps, text[:300]
    else:
        spacing = float(group.vision["second_per_grid_ts"][0])
        assert spacing == pytest.approx(2 / (4 / 20 * 10))


@pytest.mark.parametrize("frames", [1, 3, 4, 7])
def test_visual_tokens_are_what_the_processor_makes(lm, clip_questions, frames):
    """The frame budget's count for n frames equals the video tokens the processor puts in the prompt (an odd
    count padded to a pair, as the processor pads it), for any --max-num."""
    video, questions = clip_questions
    spec = inputs.InputSpec.of(lm)
    for max_num in (1, 2):
        cfg = RunConfig(model="tiny", device="cpu", support_frames=False, min_frames=frames, max_frames=frames,
                        max_num=max_num)
        clip = inputs.prepare_clip(video, questions, cfg, spec)
        (group,) = clip.groups
        pad = lm.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        made = int((group.prefix_ids == pad).sum())
        width, height = clip.decoded[group.frames[0]].shape[1], clip.decoded[group.frames[0]].shape[0]
        assert made == group.visual_tokens == spec.ops.visual_tokens(spec, width, height, frames, 0, cfg)


def test_a_448_pair_costs_the_familys_tokens_and_the_budget_counts_them(lm):
    """A 448 x 448 frame pair is 196 tokens for Qwen3-VL and 256 for Qwen2.5-VL (not InternVL's 2 x 256); the
    frame budget cuts the frames until their tokens fit --max-visual-tokens."""
    spec = inputs.InputSpec.of(lm)
    per_pair = {"qwen3_vl": 196, "qwen2_5_vl": 256, "qwen3_5": 196}[lm.family]
    cfg = RunConfig(model="tiny", max_frames=16, min_frames=4)
    assert spec.ops.visual_tokens(spec, 448, 448, 2, 0, cfg) == per_pair
    info = SimpleNamespace(width=448, height=448, duration=60.0)
    assert inputs.frame_budget(info, cfg.replace(max_visual_tokens=per_pair * 8), spec) == (16, 0)
    count, _ = inputs.frame_budget(info, cfg.replace(max_visual_tokens=per_pair * 3), spec)
    assert count == 6 and spec.ops.visual_tokens(spec, 448, 448, count, 0, cfg) <= per_pair * 3


def test_generate_mode_is_greedy_decoding_of_the_whole_prompt(lm, clip_questions):
    """Generated tokens from the shared prefix (positions continuing after the suffix) equal greedy decoding by
    whole-prompt forwards of the processor's inputs with the tokens appended; the text is parsed or falls back."""
    video, questions = clip_questions
    cfg = RunConfig(model="tiny", device="cpu", support_frames=False, min_frames=4, max_frames=4,
                    answer_mode="generate", max_new_tokens=4)
    clip = inputs.prepare_clip(video, questions, cfg, inputs.InputSpec.of(lm))
    records = {r["id"]: r for r in answering.answer_clip(lm, clip, cfg)}
    stops = lm.stop_ids
    for q in questions:
        ref = dict(reference_inputs(lm, clip, clip.groups[0].frames, q, cfg))
        tokens = []
        for _ in range(cfg.max_new_tokens):
            token = int(torch.argmax(reference_logits(lm, ref)))
            if token in stops:
                break
            tokens.append(token)
            ref["input_ids"] = torch.cat([ref["input_ids"], torch.tensor([[token]])], dim=1)
            ref["attention_mask"] = torch.ones_like(ref["input_ids"])
            ref["mm_token_type_ids"] = torch.cat([ref["mm_token_type_ids"], torch.zeros(1, 1, dtype=torch.long)],
                                                 dim=1)
        record = records[q.id]
        assert record["raw"] == lm.tokenizer.decode(tokens, skip_special_tokens=False), q.id
        assert record["mode"] in ("generate", "generate-fallback-score") and record["answer"] in q.letters


def test_permutations_make_the_answer_independent_of_the_files_choice_order(lm, clip_questions):
    """With every order of the choices asked, a question and its copy with the choices reordered in the file get
    the same probability per choice text."""
    video, questions = clip_questions
    q = next(q for q in questions if q.num_choices == 4)
    twin = choice_orders.permute_choices(q, (2, 0, 3, 1))
    cfg = RunConfig(model="tiny", device="cpu", support_frames=False, min_frames=4, max_frames=4, permutations=4)
    by_text = []
    for asked in (q, twin):
        clip = inputs.prepare_clip(video, [asked], cfg, inputs.InputSpec.of(lm))
        (record,) = answering.answer_clip(lm, clip, cfg)
        assert len(record["orders"]) == 4  # each choice at each position once
        by_text.append({c: record["probs"][letter] for letter, c in zip(asked.letters, asked.choices)})
    assert by_text[0] == pytest.approx(by_text[1], abs=2e-6)


def test_the_pipeline_answers_alike_on_every_path(lm, synthetic_dataset, tmp_path):
    """roadbuddy-predict's run on the whole synthetic set: shared prefix packed = one question at a time =
    --no-share-prefix, record for record; the records name the frames and the family's visual tokens."""
    from roadbuddy.predict import pipeline

    runs = {}
    for name, changes in {"packed": {}, "one": {"batch_questions": False}, "plain": {"share_prefix": False}}.items():
        cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / name / "submission.csv",
                        device="cpu", progress=False, min_frames=4, max_frames=6)
        pipeline.run(cfg.replace(**changes), model_loader=lambda _c: lm, say=lambda _m: None)
        lines = (tmp_path / name / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        runs[name] = {r["id"]: r for r in map(json.loads, lines)}
    assert len(runs["packed"]) == len(load_questions(synthetic_dataset))
    for qid, record in runs["packed"].items():
        assert record["mode"] == "score" and record["visual_tokens"] > 0
        for other in ("one", "plain"):
            assert runs[other][qid]["probs"] == pytest.approx(record["probs"], abs=2e-6), (other, qid)
            assert runs[other][qid]["frames"] == record["frames"]


@pytest.mark.parametrize("setting, flag", [({"fused_attention": True}, "--fused-attention")])
def test_settings_without_meaning_for_qwen_are_one_sentence(lm, setting, flag):
    with pytest.raises(ConfigError) as err:
        lm.ops.check_config(RunConfig(**setting))
    message = str(err.value)
    assert message.startswith(flag) and "\n" not in message


def test_out_of_memory_lowers_the_pixel_budget_then_the_frames(lm, synthetic_dataset, tmp_path, monkeypatch):
    """The OOM ladder on a Qwen model: a prefill with more video tokens than fit raises CUDA OOM; the clip's
    questions are answered again with --max-num 1 (a smaller pixel budget per frame), then fewer frames."""
    from roadbuddy.families.qwen_vl import model as qwen_model
    from roadbuddy.predict import pipeline

    real, seen = qwen_model.prefill, []

    def prefill(lm_, group, cache, suffix=None):
        seen.append(group.visual_tokens)
        if group.visual_tokens > 20:
            raise torch.cuda.OutOfMemoryError(f"injected: {group.visual_tokens} video tokens")
        return real(lm_, group, cache, suffix)

    monkeypatch.setattr(qwen_model, "prefill", prefill)
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "submission.csv", device="cpu",
                    progress=False, support_frames=False, max_num=4, min_frames=8, max_frames=8)
    summary = pipeline.run(cfg, model_loader=lambda _c: lm, say=lambda _m: None)
    assert not summary.errors
    lines = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == len(load_questions(synthetic_dataset))
    assert all(r["oom_retries"] >= 1 and r["visual_tokens"] <= 20 for r in recs)
    assert {r["degraded"]["max_num"] for r in recs} == {1} and max(seen) > 20
    assert any(r["degraded"]["max_frames"] < 8 for r in recs)


def test_quantization_keeps_the_vision_tower_and_lm_head_in_bf16(lm):
    """--load-in-8bit/4bit convert the language model's linear layers only: the family's skip list (as transformers
    matches it) keeps every linear layer of the vision tower with its patch mergers, and the lm_head."""
    quantizers_utils = pytest.importorskip("transformers.quantizers.quantizers_utils")
    skip = lm.ops.skip_quantization
    linears = [name for name, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear)]
    kept = [n for n in linears if not quantizers_utils.should_convert_module(n, skip)]
    converted = [n for n in linears if quantizers_utils.should_convert_module(n, skip)]
    assert "lm_head" in kept and any(".merger." in n for n in kept)
    assert all(n.startswith(("model.visual.", "lm_head")) for n in kept)
    assert converted and all(n.startswith("model.language_model.") for n in converted)
    assert not [n for n in converted if "visual" in n]


def test_system_prompt_none_is_what_the_chat_template_sends_without_one(lm):
    """--system-prompt none: Qwen2.5-VL's template puts its own default system turn in, Qwen3-VL's none; the
    project's prompt replaces either."""
    from roadbuddy.families.qwen_vl.inputs import chat_texts

    spec = inputs.InputSpec.of(lm)
    none, _ = chat_texts(spec, RunConfig(system_prompt="none"))
    project, _ = chat_texts(spec, RunConfig())
    default = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert none.startswith(default) == (lm.family == "qwen2_5_vl")
    assert none.startswith("<|im_start|>user\n") == (lm.family in CLIP_WIDE)
    assert project.startswith(f"<|im_start|>system\n{wording.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")


def test_debias_estimates_and_divides_out_a_letter_prior(lm, synthetic_dataset, tmp_path):
    """--debias on a Qwen model: the prior is estimated from questions asked in all their orders and divided out
    of every answer (records keep what the model said as observed_probs)."""
    from roadbuddy.predict import pipeline

    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "submission.csv", device="cpu",
                    progress=False, min_frames=4, max_frames=4, debias=True, debias_questions=2)
    pipeline.run(cfg, model_loader=lambda _c: lm, say=lambda _m: None)
    recs = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    prior = json.loads((tmp_path / "prior.json").read_text(encoding="utf-8"))
    divided = [r for r in recs if "observed_probs" in r]
    assert len(recs) == len(load_questions(synthetic_dataset)) and prior and divided
    assert any(r["probs"] != r["observed_probs"] for r in divided)


def test_one_vision_start_and_end_per_frame_pair_whatever_the_transformers_release(lm, clip_questions):
    """Qwen3-VL and Qwen3.5 wrap every frame pair in its own <|vision_start|>...<|vision_end|>: the chat
    template's pair around the whole video is dropped before the processor sees the text (transformers 5.25's
    processor drops it itself, 5.17's kept it and the model saw an extra pair); Qwen2.5-VL keeps its one pair."""
    from roadbuddy.families.qwen_vl.inputs import chat_texts

    video, questions = clip_questions
    cfg = RunConfig(model=str(lm.source), device="cpu", min_frames=4, max_frames=4, support_frames=False)
    spec = inputs.InputSpec.of(lm)
    prefix, _ = chat_texts(spec, cfg)
    wrapper = "<|vision_start|><|video_pad|><|vision_end|>"
    assert (wrapper in prefix) == (lm.family == "qwen2_5_vl")
    clip = inputs.prepare_clip(video, questions, cfg, spec)
    ids = clip.groups[0].prefix_ids[0].tolist()
    start, end = spec.tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    pairs = 1 if lm.family == "qwen2_5_vl" else 2  # 4 frames: one video (Qwen2.5-VL), or 2 temporal pairs
    assert ids.count(start) == pairs and ids.count(end) == pairs

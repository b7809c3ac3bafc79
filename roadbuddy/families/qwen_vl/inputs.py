"""Qwen's inputs for a clip's frames, made by the checkpoint's own processor (so they are its inputs for these
frames by construction): the frames go in as one video with their real indices and the source's fps and
frame count (`do_sample_frames=False`: the project's frame plan chose them), sized by a per-frame pixel
budget of --max-num x 448 x 448 (the area of --max-num InternVL tiles).

- Qwen2.5-VL bounds each frame (`smart_resize` to multiples of 28 within the budget): a 448 x 448 frame
  pair is 256 tokens; the pairs' spacing in time goes in as `second_per_grid_ts` (2 / sampled fps).
- Qwen3-VL bounds the whole clip (t x h x w within frames x budget, multiples of 32), so a frame's size
  depends on the frame count: a 448 x 448 pair is 196 tokens; each pair is preceded by `<t seconds>`, the
  mean of its two frames' real times.
An odd frame count is padded by the processor repeating the last frame, as it pads any video.

--detail-frames K: a video has one frame size, so a question's K detail frames are shown a second time,
after the video, as images at up to --detail-max-num x 448 x 448 pixels each (the image processor's own
resize rule and floor), in time order; --max-visual-tokens counts their image tokens with the video's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from roadbuddy.families import wording
from roadbuddy.families.text_ids import tokenize
from roadbuddy.video.thumbnails import write_thumbnails

TILE_AREA = 448 * 448  # --max-num's unit: one InternVL tile's pixels
_MARK = "\uE000QUESTION\uE000"  # stands for the question while the chat template is rendered, then split at


@dataclass(frozen=True)
class VideoSpec:
    """What a Qwen model's inputs depend on: its family, tokenizer and processor (and the chat template's
    text around the question, rendered once per system prompt and intro)."""

    family: object
    tokenizer: object
    processor: object
    _texts: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def ops(self):
        return self.family

    @property
    def video_processor(self):
        return self.processor.video_processor


def pixel_bounds(spec: VideoSpec, cfg) -> tuple[int, int]:
    """(fewest, most) pixels of one frame: the processor's own floor, and --max-num x 448 x 448 under its ceiling."""
    size = spec.video_processor.size
    low = int(size.shortest_edge or size.min_pixels)
    high = int(size.longest_edge or size.max_pixels)
    per_frame = cfg.max_num * TILE_AREA
    return low, per_frame if spec.family.clip_wide_budget else min(per_frame, high)


def processor_size(spec: VideoSpec, frames: int, cfg) -> dict:
    """The `size` the processor is called with for `frames` frames (Qwen3-VL's bound is the whole clip's)."""
    low, per_frame = pixel_bounds(spec, cfg)
    if spec.family.clip_wide_budget:
        high = int(spec.video_processor.size.longest_edge)
        return {"shortest_edge": low, "longest_edge": min(per_frame * max(frames, 1), high)}
    return {"shortest_edge": low, "longest_edge": per_frame}


def shown(spec: VideoSpec, frames):
    """The frames as the processor is given them: Qwen3-VL's resize rule needs a whole frame pair, so a single
    frame goes in twice (what the processor's padding of an odd count would show anyway)."""
    return tuple(frames) * spec.video_processor.temporal_patch_size if spec.family.clip_wide_budget and \
        len(frames) == 1 else tuple(frames)


def frame_size(spec: VideoSpec, width: int, height: int, frames: int, cfg) -> tuple[int, int]:
    """(height, width) the processor resizes each of `frames` frames to, by the family's own `smart_resize`."""
    vp = spec.video_processor
    frames = len(shown(spec, range(frames)))
    size = processor_size(spec, frames, cfg)
    factor = vp.patch_size * vp.merge_size
    if spec.family.clip_wide_budget:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        return smart_resize(num_frames=frames, height=height, width=width, temporal_factor=vp.temporal_patch_size,
                            factor=factor, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=factor, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])


def image_size(spec: VideoSpec, cfg) -> dict:
    """The `size` a detail frame's image is made with: --detail-max-num x 448 x 448 pixels at most (never fewer
    than --max-num's), within the image processor's own bounds."""
    size = spec.processor.image_processor.size
    low, high = int(size.shortest_edge or size.min_pixels), int(size.longest_edge or size.max_pixels)
    return {"shortest_edge": low, "longest_edge": min(max(cfg.detail_max_num, cfg.max_num) * TILE_AREA, high)}


def detail_tokens(spec: VideoSpec, width: int, height: int, cfg) -> int:
    """Image tokens of one detail frame, by the image processor's own `smart_resize`."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ip = spec.processor.image_processor
    size = image_size(spec, cfg)
    h, w = smart_resize(height, width, factor=ip.patch_size * ip.merge_size, min_pixels=size["shortest_edge"],
                        max_pixels=size["longest_edge"])
    return (h // ip.patch_size) * (w // ip.patch_size) // (ip.merge_size ** 2)


def visual_tokens(spec: VideoSpec, width: int, height: int, count: int, detail: int, cfg) -> int:
    """Video tokens of `count` frames: (h / patch) x (w / patch) / merge^2 per temporal pair (an odd count
    padded to a pair), and the image tokens of `detail` detail frames."""
    if count < 1:
        return 0
    vp = spec.video_processor
    h, w = frame_size(spec, width, height, count, cfg)
    pairs = math.ceil(count / vp.temporal_patch_size)
    video = pairs * (h // vp.patch_size) * (w // vp.patch_size) // (vp.merge_size ** 2)
    return video + (detail * detail_tokens(spec, width, height, cfg) if detail else 0)


def decode(reader, clip, cfg, spec: VideoSpec) -> None:
    """The clip's frames, full size (the processor resizes them as it resizes any video): clip.decoded."""
    decoded = reader.get(clip.frame_order, size=None)
    if cfg.thumbnail_dir is not None:
        write_thumbnails(decoded, clip.frame_order, clip.questions[0].video_rel, cfg.thumbnail_dir)
    clip.decoded = dict(zip(clip.frame_order, decoded))


def chat_texts(spec: VideoSpec, cfg, images: int = 0) -> tuple[str, str]:
    """(prefix, suffix) text around a question, from the checkpoint's own chat template: the system turn (the
    template's own default where --system-prompt none, as Qwen2.5-VL's injects one), the user turn's video,
    `images` detail frames and intro; then the turn's end and the assistant's opening. Where every frame pair
    brings its own vision start and end (Qwen3-VL, Qwen3.5), the template's pair around the video is dropped, as
    the processor of transformers 5.25 does: 5.17's kept it, an extra pair around all the frames that changed
    what the model was shown (the tiny seeing Qwen3-VL: 77.1% on 5.17 against 93.8%)."""
    key = (cfg.system_prompt, cfg.simple_prompts, images)
    if key not in spec._texts:
        system = wording.system_text(cfg.system_prompt)
        messages = [] if system is None else [{"role": "system", "content": [{"type": "text", "text": system}]}]
        messages.append({"role": "user", "content": [
            {"type": "video"}, *[{"type": "image"}] * images,
            {"type": "text", "text": wording.intro_text(cfg.simple_prompts) + _MARK}]})
        text = spec.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                  **spec.family.chat_template_kwargs)
        if spec.family.frames_wrapped:  # what transformers >= 5.2x's processor does itself; 5.17's kept both pairs
            marks = [getattr(spec.processor, name, default) for name, default in (
                ("vision_start_token", "<|vision_start|>"), ("video_token", "<|video_pad|>"),
                ("vision_end_token", "<|vision_end|>"))]  # the processor's own defaults
            text = text.replace("".join(marks), marks[1])
        prefix, suffix = text.split(_MARK)
        spec._texts[key] = (prefix, suffix)
    return spec._texts[key]


def question_ids(spec: VideoSpec, q, cfg) -> torch.Tensor:
    """The suffix: the question with its choices, tokenized as plain text, then the turn's end."""
    body = wording.question_body(q.question, q.choices, simple=cfg.simple_prompts)
    return torch.cat([tokenize(spec.tokenizer, body, as_text=True),
                      tokenize(spec.tokenizer, chat_texts(spec, cfg)[1])], dim=1)


def video_metadata(clip, frames: tuple[int, ...], shape) -> dict:
    """What the processor knows of the video: the chosen frames' indices in the source, its fps and length."""
    fps = clip.fps if clip.fps > 0 and math.isfinite(clip.fps) else 1.0
    total = max(clip.num_frames, max(frames) + 1)
    return {"fps": fps, "frames_indices": list(frames), "total_num_frames": total, "duration": total / fps,
            "height": int(shape[0]), "width": int(shape[1])}


def group_inputs(clip, frames: tuple[int, ...], detail: tuple[int, ...], cfg, spec: VideoSpec) -> dict:
    """A frame set's prefix ids (the video's tokens, and its detail frames' images, expanded by the processor)
    and vision inputs."""
    planned, frames = frames, shown(spec, frames)
    video = np.stack([clip.decoded[f] for f in frames])
    detail = sorted(detail)
    video_kwargs = {"size": processor_size(spec, len(frames), cfg)}
    if hasattr(type(spec.video_processor), "cap_pixels_per_frame"):  # releases that still have the choice
        video_kwargs["cap_pixels_per_frame"] = False  # the size above is already the per-frame budget
    images = {"images": [clip.decoded[f] for f in detail], "images_kwargs": {"size": image_size(spec, cfg)}}
    out = spec.processor(text=[chat_texts(spec, cfg, len(detail))[0]], videos=[video],
                         video_metadata=[video_metadata(clip, frames, video.shape[1:3])], do_sample_frames=False,
                         videos_kwargs=video_kwargs, return_tensors="pt", **(images if detail else {}))
    vision = {key: out[key] for key in ("pixel_values_videos", "video_grid_thw", "mm_token_type_ids",
                                        "pixel_values", "image_grid_thw") if key in out}
    if "second_per_grid_ts" in out:
        vision["second_per_grid_ts"] = torch.as_tensor(out["second_per_grid_ts"])
    return dict(prefix_ids=out["input_ids"], vision=vision, tiles_per_frame=[1 + (f in detail) for f in planned],
                visual_tokens=int((out["mm_token_type_ids"] != 0).sum()))

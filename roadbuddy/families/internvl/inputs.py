"""InternVL's inputs for a clip's frames: tiles (448 px, up to --max-num per frame plus a thumbnail), and the
prompt's image slots, 256 <IMG_CONTEXT> tokens per tile (families/internvl/prompts.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from roadbuddy.families.internvl import prompts, tiles
from roadbuddy.families.text_ids import tokenize
from roadbuddy.video.thumbnails import write_thumbnails


@dataclass(frozen=True)
class TileSpec:
    """What InternVL's inputs depend on: its tile size, image tokens per tile and tokenizer."""

    image_size: int
    tokens_per_tile: int
    tokenizer: object

    @property
    def ops(self):
        from roadbuddy.families import registry

        return registry.ops("internvl")


def visual_tokens(spec: TileSpec, width: int, height: int, count: int, detail: int, cfg) -> int:
    """Image tokens of `count` frames of this size, `detail` of them tiled up to --detail-max-num tiles."""
    def tokens(max_num):
        return spec.tokens_per_tile * tiles.tiles_per_frame(width, height, max_num, cfg.use_thumbnail,
                                                             image_size=spec.image_size)

    return count * tokens(cfg.max_num) + detail * (tokens(max(cfg.detail_max_num, cfg.max_num)) - tokens(cfg.max_num))


def decoder(cfg) -> str:
    """One tile per frame is one resize to SxS: letting the decoder do it skips the full-size RGB conversion and
    PIL resize (pixels differ from the card's by about one uint8 level; see bench/README.md). PyAV's sequential
    decode with swscale's bicubic is the faster reader for it."""
    return "pyav" if cfg.decoder_scaling and cfg.max_num == 1 else "decord"


def decode(reader, clip, cfg, spec: TileSpec) -> None:
    """The tiles of the clip's views (clip.tiles uint8 [N,3,S,S], clip.tiles_per_frame per view): detail views
    decoded full size and tiled up to --detail-max-num tiles plus a thumbnail, the others up to --max-num
    (decoder-scaled when that is one tile)."""
    size = spec.image_size
    scale = (size, size) if decoder(cfg) == "pyav" else None
    by_view: dict[tuple[int, bool], torch.Tensor] = {}
    for fine, read_size, max_num in ((False, scale, cfg.max_num), (True, None, max(cfg.detail_max_num, cfg.max_num))):
        group = [f for f, d in clip.views if d == fine]
        if not group:
            continue
        decoded = reader.get(group, size=read_size)
        if cfg.thumbnail_dir is not None:
            write_thumbnails(decoded, group, clip.questions[0].video_rel, cfg.thumbnail_dir)
        stacked, counts = tiles.frames_to_tiles(decoded, size, max_num=max_num, use_thumbnail=cfg.use_thumbnail)
        by_view.update(((f, fine), t) for f, t in zip(group, torch.split(stacked, counts)))
    parts = [by_view[view] for view in clip.views]
    clip.tiles, clip.tiles_per_frame = torch.cat(parts), [int(p.shape[0]) for p in parts]


def prefix_ids(tokenizer, tiles_per_frame, tokens_per_tile: int, cfg) -> torch.Tensor:
    """The shared prefix: system turn, the frames' image slots and the question-independent intro."""
    frames_block = prompts.frames_text(tiles_per_frame, tokens_per_tile) + prompts.intro_text(cfg.simple_prompts)
    return tokenize(tokenizer, prompts.prompt_prefix(frames_block, prompts.system_text(cfg.system_prompt)))


def question_ids(tokenizer, q, cfg) -> torch.Tensor:
    """The suffix: the question from the file with its choices, tokenized as plain text, then the turn's end."""
    block = tokenize(tokenizer, prompts.question_body(q.question, q.choices, simple=cfg.simple_prompts), as_text=True)
    return torch.cat([block, tokenize(tokenizer, prompts.prompt_suffix(""))], dim=1)


def group_inputs(clip, frame_idx: tuple[int, ...], fine: tuple[int, ...], cfg, spec: TileSpec) -> dict:
    """A frame set's prefix ids and the rows of the clip's tiles (and of its encoded features) it shows."""
    starts = [0]
    for n in clip.tiles_per_frame:
        starts.append(starts[-1] + n)
    position = {view: i for i, view in enumerate(clip.views)}
    seen = [position[(f, f in fine)] for f in frame_idx]
    counts = [clip.tiles_per_frame[i] for i in seen]
    return dict(tile_rows=[r for i in seen for r in range(starts[i], starts[i + 1])], tiles_per_frame=counts,
                visual_tokens=sum(counts) * spec.tokens_per_tile,
                prefix_ids=prefix_ids(spec.tokenizer, counts, spec.tokens_per_tile, cfg))

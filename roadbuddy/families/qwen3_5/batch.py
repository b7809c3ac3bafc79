"""Several questions after one Qwen3.5 prefix in one forward, without packing them into one sequence: the prefix's
state (keys and values of the attention layers, conv and recurrent states of the linear-attention ones) is
copied and repeated along the batch (Cache.reorder_cache; batch_repeat_interleave has no linear-attention
layer), and the questions go in as rows, right-padded, each read at its last real token. Right padding leaves
every real position's logits exact (padded tokens come after them); the batch's cache is then thrown away
(padding has run through its recurrences), so generate mode runs each question on its own copy instead.

bench/cpu_qwen35.py measured this against one question at a time on copies, on a mid-size model (6 questions of
77 to 83 tokens after a 1,249-token prefix, 1 thread, 2-core AMD EPYC shared with other work, 2026-12-05):
0.84x and 0.99x the questions' time in two 5-round runs, never slower; a GPU, which runs a batch's rows in
parallel, should favour it more (not measured).
"""
from __future__ import annotations

import copy

import torch


@torch.inference_mode()
def extend_batch(lm, suffixes: list[torch.Tensor], cache, start: int) -> torch.Tensor:
    """[len(suffixes), vocab] next-token logits after each suffix (each 1 x T_i), all from the prefix in `cache`
    (left as it was), positions start, start + 1, ... on the three M-RoPE rows of every row."""
    prefix_len = int(cache.get_seq_length())
    lengths = [int(s.shape[1]) for s in suffixes]
    width = max(lengths)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(suffixes), width), pad, dtype=torch.long, device=lm.device)
    mask = torch.zeros(len(suffixes), prefix_len + width, dtype=torch.long, device=lm.device)
    mask[:, :prefix_len] = 1
    for row, (suffix, n) in enumerate(zip(suffixes, lengths)):
        ids[row, :n] = suffix[0].to(lm.device)
        mask[row, prefix_len:prefix_len + n] = 1
    rows = copy.deepcopy(cache)
    rows.reorder_cache(torch.zeros(len(suffixes), dtype=torch.long, device=lm.device))
    pos = (start + torch.arange(width, device=lm.device)).view(1, 1, -1).expand(3, len(suffixes), -1)
    last = torch.tensor(lengths, device=lm.device) - 1
    out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                   **{lm.cache_kwarg: rows})
    return out.logits[torch.arange(len(suffixes), device=lm.device), last].float()

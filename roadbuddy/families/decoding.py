"""What every family does the same once it has next-token logits: the KV cache's lifetime, the letters'
probabilities, and greedy decoding through the family's own `extend`."""
from __future__ import annotations

import torch


def new_cache(lm):
    from transformers import DynamicCache

    return DynamicCache(config=lm.config)


def rewind(cache, length: int) -> None:
    """Cut `cache` back to its first `length` tokens (the shared prefix).

    A negative argument means "remove that many" in every transformers 5.x
    (positive values changed meaning in 5.18), so only that form is used.
    """
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def letter_probs(lm, logits: torch.Tensor, letters: tuple[str, ...]) -> dict[str, float]:
    """Softmax over the next-token logits of this question's valid letters only."""
    ids = [lm.letter_ids[letter] for letter in letters]
    probs = torch.softmax(logits[ids], dim=-1)
    return {letter: float(p) for letter, p in zip(letters, probs)}


@torch.inference_mode()
def greedy(lm, first_logits: torch.Tensor, cache, max_new_tokens: int, start: int | None = None) -> str:
    """Greedy continuation from `first_logits`, extending `cache`, the first new token at rotary position
    `start` (by default the cache's length, which is right for 1D positions only: answering always passes
    the family's own); returns the decoded text."""
    start = cache.get_seq_length() if start is None else start
    tokens = []
    logits = first_logits
    for step in range(max_new_tokens):
        token = int(torch.argmax(logits))
        if token in lm.stop_ids:
            break
        tokens.append(token)
        logits = lm.ops.extend(lm, torch.tensor([[token]], device=lm.device), cache, start + step)
    return lm.tokenizer.decode(tokens, skip_special_tokens=False)


def packed_mask(lengths: list[int], prefix_len: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """For suffixes side by side after a cached prefix: the additive 4D mask [1,1,ΣS,P+ΣS] (each token sees the
    whole prefix and the earlier tokens of its own suffix; 0 or the dtype's min, which eager attention adds and
    SDPA takes alike) and each token's offset inside its own suffix [ΣS]."""
    sizes = torch.tensor(lengths, device=device)
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=device), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    offset = torch.arange(int(sizes.sum()), device=device) - starts[owner]
    sees = (owner[:, None] == owner[None, :]) & (offset[:, None] >= offset[None, :])
    sees = torch.cat([sees.new_ones(len(offset), prefix_len), sees], dim=1)
    mask = torch.zeros(sees.shape, dtype=dtype, device=device)
    mask.masked_fill_(~sees, torch.finfo(dtype).min)
    return mask[None, None], offset

"""Proportional attention: a visual row that stands for w original tokens draws the attention of w.

`VisualTokens.weight` says how many original tokens a row stands for (merged rows, and kept rows
that absorbed dropped ones: `tokencomp.plan.absorb_dropped`). Softmax attention sums over keys, so
one row in place of w near-identical ones gets about 1/w of the attention mass the w had, and a
model trained on full streams reads a compressed stream as a different scene (fewer objects, a
smaller background). Adding log(w) to that key's attention logit gives it exactly the mass of w
identical copies: exp(s + log w) = w * exp(s). This is ToMe's "proportional attention" (Bolya et
al., "Token Merging: Your ViT But Faster", ICLR 2023, eq. 1), applied to the LLM's keys; own code.

It is exact for w identical keys and values seen by the same query (tested on a one-layer model:
a row of weight w gives the logits of w copies of it). Deeper layers differ because the copies
would also have attended to each other.

Measured on the demo model (docs/benchmarks.md, 280 held-out items, same kept tokens, plain ->
absorbed + proportional): at 25% of tokens codec 0.564 -> 0.846 and divprune 0.482 -> 0.879 (full:
0.904); at 10% divprune 0.021 -> 0.818.
"""

from __future__ import annotations

import torch

ATTENTION_MODES: tuple[str, ...] = ("proportional", "plain")


def key_bias(text_before: int, weight: torch.Tensor) -> torch.Tensor | None:
    """[text_before + N] float32 additive bias of the prompt's keys up to the video's end:
    0 for the text before the video, log(weight) for each visual row. None when every weight is 1
    (the bias would be all zeros: the caller keeps transformers' own causal mask, bit for bit)."""
    weight = weight.detach().cpu()
    if weight.numel() and int(weight.min()) < 1:
        raise ValueError(f"visual row weights must be >= 1, got min {int(weight.min())}")
    if not bool((weight > 1).any()):
        return None
    return torch.cat([torch.zeros(text_before, dtype=torch.float32), weight.to(torch.float32).log()])


def attention_mask(bias: torch.Tensor, past: int, q_len: int, dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, q_len, past + q_len] additive mask: causal (query i sees keys <= past + i), plus
    `bias` on the first `bias.numel()` keys (keys after them, later text, get 0).

    dtype: the model's dtype; masked entries hold its most negative finite value, as transformers'
    own masks do (an -inf row would give NaN in softmax if it were ever fully masked).
    """
    kv = past + q_len
    b = torch.zeros(kv, dtype=torch.float32)
    n = min(kv, bias.numel())
    b[:n] = bias[:n]
    q_index = torch.arange(q_len)[:, None] + past
    k_index = torch.arange(kv)[None, :]
    neg = torch.finfo(dtype).min
    mask = torch.where(k_index <= q_index, b[None, :], torch.tensor(neg, dtype=torch.float32))
    return mask.to(dtype)[None, None]

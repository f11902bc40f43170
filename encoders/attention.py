"""Packed variable-length attention: block-diagonal over consecutive segments.

Tokens of many videos / windows travel in one [N, heads, D] tensor; `seqlens` gives the lengths of
consecutive segments and a token attends only within its own segment (no padding, no cross-talk).

Backends are a registry (`register_backend`, `get_backend`); `select_backend(device, dtype)` picks
one at run time and logs the choice once:
- CUDA: flash-attn varlen when importable (fp16/bf16), else xformers' BlockDiagonalMask
  memory-efficient attention, else grouped SDPA. Neither library is imported without CUDA.
- CPU: grouped SDPA: segments of equal length are stacked into one batch and run as one SDPA
  call. Measured on the 2-core dev machine (bench/encoder.py --attention) against a per-segment
  loop and a dense block mask: see docs/benchmarks.md.
All backends compute softmax in float32 (SDPA, flash and xformers accumulate in fp32 internally).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Callable

import torch
import torch.nn.functional as F

from encoders.errors import BadRequest

log = logging.getLogger(__name__)

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[int]], torch.Tensor]
_BACKENDS: dict[str, AttentionFn] = {}


def register_backend(name: str):
    def wrap(fn: AttentionFn) -> AttentionFn:
        _BACKENDS[name] = fn
        return fn

    return wrap


def get_backend(name: str) -> AttentionFn:
    if name not in _BACKENDS:
        raise BadRequest(f"unknown attention backend {name!r}; known: {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[name]


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]):
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"varlen attention: q, k, v must share one [N, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if sum(seqlens) != q.shape[0] or any(n <= 0 for n in seqlens):
        raise ValueError(f"varlen attention: positive seqlens must sum to N={q.shape[0]}, got sum {sum(seqlens)}")


@register_backend("sdpa_grouped")
def attention_sdpa_grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
    """q, k, v: [N, heads, D]; seqlens: consecutive segment lengths summing to N -> [N, heads, D].

    Equal-length segments are batched into one SDPA call; with one length (whole tubelets, or
    every window full) the batch is a free view.
    """
    _check(q, k, v, seqlens)
    n, heads, d = q.shape
    if len(set(seqlens)) == 1:
        length = seqlens[0]
        qb, kb, vb = (x.view(n // length, length, heads, d).transpose(1, 2) for x in (q, k, v))
        return F.scaled_dot_product_attention(qb, kb, vb).transpose(1, 2).reshape(n, heads, d)
    out = torch.empty_like(q)
    starts = torch.tensor([0] + seqlens[:-1], dtype=torch.int64).cumsum(0)
    lengths = torch.tensor(seqlens, dtype=torch.int64)
    for length in sorted(set(seqlens)):
        idx = (starts[lengths == length][:, None] + torch.arange(length)[None, :]).to(q.device)  # [S, L]
        qb, kb, vb = (x[idx].transpose(1, 2) for x in (q, k, v))  # [S, heads, L, D]
        out[idx] = F.scaled_dot_product_attention(qb, kb, vb).transpose(1, 2)
    return out


@register_backend("sdpa_loop")
def attention_sdpa_loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
    """One SDPA call per segment (what transformers does without flash-attn). Same contract."""
    _check(q, k, v, seqlens)
    outs = [
        F.scaled_dot_product_attention(qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1)).transpose(0, 1)
        for qs, ks, vs in zip(q.split(seqlens), k.split(seqlens), v.split(seqlens))
    ]
    return torch.cat(outs, 0)


@register_backend("sdpa_masked")
def attention_sdpa_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
    """One SDPA call over all N tokens with a dense [N, N] block-diagonal mask. Same contract."""
    _check(q, k, v, seqlens)
    seg = torch.repeat_interleave(torch.arange(len(seqlens), device=q.device),
                                  torch.tensor(seqlens, device=q.device))
    mask = seg[:, None] == seg[None, :]
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask)
    return out.transpose(0, 1)


@register_backend("xformers")
def attention_xformers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
    """xformers memory-efficient attention with a BlockDiagonalMask (CUDA only). Same contract."""
    _check(q, k, v, seqlens)
    from xformers.ops import fmha  # imported only here: CUDA paths with xformers installed

    bias = fmha.attn_bias.BlockDiagonalMask.from_seqlens(seqlens)
    return fmha.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)[0]


@register_backend("flash_varlen")
def attention_flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
    """flash-attn's varlen kernel over cu_seqlens (CUDA, fp16/bf16). Same contract."""
    _check(q, k, v, seqlens)
    from flash_attn import flash_attn_varlen_func  # imported only here

    cu = torch.tensor([0] + seqlens, dtype=torch.int32, device=q.device).cumsum(0, dtype=torch.int32)
    longest = max(seqlens)
    return flash_attn_varlen_func(q, k, v, cu, cu, longest, longest)


@functools.lru_cache(maxsize=8)
def select_backend(device_type: str, dtype: torch.dtype) -> str:
    """Backend name for a device and dtype; logged once per (device, dtype)."""
    if device_type == "cuda":
        if dtype in (torch.float16, torch.bfloat16) and importlib.util.find_spec("flash_attn") is not None:
            choice, why = "flash_varlen", "flash-attn is installed"
        elif importlib.util.find_spec("xformers") is not None:
            choice, why = "xformers", "xformers is installed"
        else:
            choice, why = "sdpa_grouped", "neither flash-attn nor xformers is installed"
    else:
        choice, why = "sdpa_grouped", "CPU"
    log.info("attention: using %s on %s/%s (%s)", choice, device_type, dtype, why)
    return choice


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int],
                     backend: str = "auto") -> torch.Tensor:
    """q, k, v: [N, heads, D], segments `seqlens` -> [N, heads, D]; scale 1/sqrt(D)."""
    name = select_backend(q.device.type, q.dtype) if backend == "auto" else backend
    return get_backend(name)(q, k, v, seqlens)

"""Fused rotary position embedding over arbitrary per-token (t, h, w) coordinates.

Each rotation pair `i` (of `D/2`) belongs to one coordinate axis (`pair_axis[i]`, a column of
`coords`) and has one frequency (`inv_freq[i]`); pair `i` rotates channels `(i, i + D/2)` (the
"rotate_half" layout of Qwen2.5-VL and most Hugging Face models). Per-axis bands are therefore
just runs of pairs with the same axis, and any split between t, h and w is expressible.

Angles are always computed in float32 from the integer (or float32) coordinates; bf16/fp16
coordinates are refused (ARCHITECTURE.md, position rule 2).

`apply_rotary_ref` is the readable spec; `apply_rotary_triton` is the fused kernel with the same
signature and results; `apply_rotary` picks one (Triton on CUDA when importable, the reference
elsewhere) and logs the choice once.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

log = logging.getLogger(__name__)

_FORBIDDEN_COORD_DTYPES = (torch.float16, torch.bfloat16)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor):
    if q.ndim != 3 or k.ndim != 3:
        raise ValueError(f"rotary: q and k must be [N, heads, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    n, _, d = q.shape
    if k.shape[0] != n or k.shape[2] != d:
        raise ValueError(f"rotary: k {tuple(k.shape)} does not match q {tuple(q.shape)} in N or D")
    if d % 2:
        raise ValueError(f"rotary: head dim must be even, got {d}")
    if coords.ndim != 2 or coords.shape[0] != n:
        raise ValueError(f"rotary: coords must be [{n}, A], got {tuple(coords.shape)}")
    if coords.dtype in _FORBIDDEN_COORD_DTYPES:
        raise TypeError(f"rotary: coords must be integer or float32, got {coords.dtype} (bf16/fp16 cannot hold positions)")
    if inv_freq.shape != (d // 2,) or pair_axis.shape != (d // 2,):
        raise ValueError(
            f"rotary: inv_freq and pair_axis must be [{d // 2}], got {tuple(inv_freq.shape)} and {tuple(pair_axis.shape)}"
        )


def apply_rotary_ref(
    q: torch.Tensor, k: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by angles `coords[n, pair_axis[i]] * inv_freq[i]` (float32).

    q: [N, Hq, D]; k: [N, Hk, D] (any float dtype, any strides).
    coords: [N, A] int64/int32/float32 per-token coordinates (e.g. A = 3 for (t, h, w)).
    inv_freq: [D/2] float32 frequency of each rotation pair.
    pair_axis: [D/2] int64 column of `coords` each pair rotates with.
    Returns (q_rot [N, Hq, D], k_rot [N, Hk, D]) in the input dtypes; math in float32.
    """
    _check_inputs(q, k, coords, inv_freq, pair_axis)
    angles = coords.to(torch.float32)[:, pair_axis.long()] * inv_freq.to(torch.float32)  # [N, D/2]
    cos = angles.cos().unsqueeze(1)  # [N, 1, D/2]
    sin = angles.sin().unsqueeze(1)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        half = x.shape[-1] // 2
        x1, x2 = xf[..., :half], xf[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


@functools.lru_cache(maxsize=2)
def _rotary_kernel(interpret: bool):
    """Build the Triton kernel. Deferred so importing vidsieve never imports Triton, and keyed on
    TRITON_INTERPRET because Triton decides interpreted vs compiled when the kernel is decorated."""
    del interpret  # only the cache key; Triton reads the environment itself
    import triton
    import triton.language as tl

    @triton.jit
    def rotary_kernel(
        x_ptr, out_ptr, coords_ptr, inv_freq_ptr, pair_axis_ptr,
        n_heads, stride_xn, stride_xh, stride_on, stride_oh, stride_cn,
        HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        # One program: one token, BLOCK_H heads, all D/2 pairs.
        n = tl.program_id(0)
        hb = tl.program_id(1)
        p = tl.arange(0, BLOCK_P)
        p_ok = p < HALF
        axis = tl.load(pair_axis_ptr + p, mask=p_ok, other=0)
        freq = tl.load(inv_freq_ptr + p, mask=p_ok, other=0.0)
        coord = tl.load(coords_ptr + n * stride_cn + axis, mask=p_ok, other=0).to(tl.float32)
        angle = coord * freq
        cos = tl.cos(angle)[None, :]
        sin = tl.sin(angle)[None, :]
        h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
        ok = (h < n_heads)[:, None] & p_ok[None, :]
        x_off = n * stride_xn + h[:, None] * stride_xh + p[None, :]
        x1 = tl.load(x_ptr + x_off, mask=ok, other=0.0).to(tl.float32)
        x2 = tl.load(x_ptr + x_off + HALF, mask=ok, other=0.0).to(tl.float32)
        o_off = n * stride_on + h[:, None] * stride_oh + p[None, :]
        out_ty = out_ptr.dtype.element_ty
        tl.store(out_ptr + o_off, (x1 * cos - x2 * sin).to(out_ty), mask=ok)
        tl.store(out_ptr + o_off + HALF, (x2 * cos + x1 * sin).to(out_ty), mask=ok)

    return rotary_kernel, triton.next_power_of_2


def _rotate_triton(x: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor) -> torch.Tensor:
    kernel, next_pow2 = _rotary_kernel(os.environ.get("TRITON_INTERPRET", "0") == "1")
    if x.stride(-1) != 1:
        x = x.contiguous()
    n, heads, d = x.shape
    out = torch.empty((n, heads, d), dtype=x.dtype, device=x.device)
    if n == 0 or heads == 0:
        return out
    block_h = min(next_pow2(heads), 16)
    grid = (n, (heads + block_h - 1) // block_h)
    kernel[grid](
        x, out, coords, inv_freq, pair_axis,
        heads, x.stride(0), x.stride(1), out.stride(0), out.stride(1), coords.stride(0),
        HALF=d // 2, BLOCK_H=block_h, BLOCK_P=next_pow2(d // 2),
    )
    return out


def apply_rotary_triton(
    q: torch.Tensor, k: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by angles `coords[n, pair_axis[i]] * inv_freq[i]` (float32).

    q: [N, Hq, D]; k: [N, Hk, D] (any float dtype, any strides).
    coords: [N, A] int64/int32/float32 per-token coordinates (e.g. A = 3 for (t, h, w)).
    inv_freq: [D/2] float32 frequency of each rotation pair.
    pair_axis: [D/2] int64 column of `coords` each pair rotates with.
    Returns (q_rot [N, Hq, D], k_rot [N, Hk, D]) in the input dtypes; math in float32.
    """
    _check_inputs(q, k, coords, inv_freq, pair_axis)
    coords = coords.contiguous()
    if coords.dtype not in (torch.int64, torch.int32, torch.float32):
        coords = coords.to(torch.int64)
    inv_freq = inv_freq.to(torch.float32).contiguous()
    pair_axis = pair_axis.to(torch.int64).contiguous()
    return _rotate_triton(q, coords, inv_freq, pair_axis), _rotate_triton(k, coords, inv_freq, pair_axis)


@functools.lru_cache(maxsize=4)
def rotary_impl(device_type: str) -> str:
    """'triton' on CUDA when Triton imports, else 'ref'. Logged once per device type."""
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            log.info("rotary: using the torch reference on cuda (triton is not installed)")
            return "ref"
        log.info("rotary: using the Triton kernel on cuda")
        return "triton"
    log.info("rotary: using the torch reference on %s (Triton is used on CUDA only)", device_type)
    return "ref"


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatching entry point; same contract as `apply_rotary_ref`."""
    if rotary_impl(q.device.type) == "triton":
        return apply_rotary_triton(q, k, coords, inv_freq, pair_axis)
    return apply_rotary_ref(q, k, coords, inv_freq, pair_axis)

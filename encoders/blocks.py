"""Encoder building blocks: tubelet patch embedding, RMSNorm, SwiGLU, rotary attention, merger.

Every module works on packed tokens [N, C] (no batch axis); positions and segments come in as
arguments, never from a token's index. Parameter names are vidsieve's own; `encoders/load.py`
maps checkpoint names onto them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders.attention import varlen_attention
from kernels.rotary import apply_rotary


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": _quick_gelu,
}


class PatchEmbed(nn.Module):
    """Tubelet patch embedding: a Conv3d with kernel = stride = (tp, p, p), run as one matmul.

    Input rows are HF's flattened patches [P, C * tp * p * p] in (c, t, i, j) order, which is the
    Conv3d weight's own layout, so the convolution is exactly `x @ weight.view(D, -1).T`.
    """

    def __init__(self, in_channels: int, temporal_patch_size: int, patch_size: int, dim: int):
        super().__init__()
        k = (temporal_patch_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=k, stride=k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [P, C*tp*p*p] -> [P, D] in the weight's dtype."""
        w = self.proj.weight
        return F.linear(x.to(w.dtype), w.view(w.shape[0], -1))


class AbsPosEmbed(nn.Module):
    """Absolute coordinates into the features: sin/cos of each chosen axis's patch coordinate at
    `pairs` geometric frequencies (10000^(-k/pairs), as a transformer's sinusoids), then a learned
    linear map to the hidden size. Computed from the patch's own (t, h, w), never from its index in
    the packed sequence (ARCHITECTURE.md rule 1), so a subset of cells gets the same values as in
    the full grid, at any resolution or length (no table to outgrow)."""

    def __init__(self, axes: tuple[int, ...], pairs: int, dim: int):
        super().__init__()
        self.register_buffer("axes", torch.tensor(axes, dtype=torch.int64), persistent=False)
        self.register_buffer("freq", 10000.0 ** (-torch.arange(pairs, dtype=torch.float32) / pairs), persistent=False)
        self.proj = nn.Linear(2 * pairs * len(axes), dim, bias=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [P, 3] int64 (t, h, w) -> [P, D] in the weight's dtype (angles in float32)."""
        angles = (coords[:, self.axes].to(torch.float32)[:, :, None] * self.freq.float()).flatten(1)
        return self.proj(torch.cat([angles.sin(), angles.cos()], 1).to(self.proj.weight.dtype))


class RMSNorm(nn.Module):
    """RMSNorm with the statistics in float32 (T5 / Qwen semantics)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C] -> [N, C]."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)); gate and up are one fused [2I, C] projection."""

    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=True)
        self.down = nn.Linear(hidden, dim, bias=True)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C] -> [N, C]."""
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)


class RotaryAttention(nn.Module):
    """Multi-head self-attention with (t, h, w) rotary positions over packed segments."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor,
                seqlens: list[int], backend: str = "auto") -> torch.Tensor:
        """x: [N, C]; coords: [N, 3] int64 (t, h, w); seqlens: segment lengths summing to N -> [N, C]."""
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, -1).unbind(1)  # each [N, heads, D]
        q, k = apply_rotary(q, k, coords, inv_freq, pair_axis)
        out = varlen_attention(q, k, v.contiguous(), seqlens, backend)
        return self.proj(out.reshape(n, -1))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = RotaryAttention(dim, num_heads)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, hidden, act)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor,
                seqlens: list[int], backend: str = "auto") -> torch.Tensor:
        """x: [N, C] -> [N, C]."""
        x = x + self.attn(self.norm1(x), coords, inv_freq, pair_axis, seqlens, backend)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """m x m patches (consecutive rows) -> one LLM-width token: norm, concat, Linear-GELU-Linear."""

    def __init__(self, dim: int, out_dim: int, merge_unit: int, eps: float = 1e-6):
        super().__init__()
        self.merge_unit = merge_unit
        self.norm = RMSNorm(dim, eps)
        self.fc1 = nn.Linear(dim * merge_unit, dim * merge_unit)
        self.fc2 = nn.Linear(dim * merge_unit, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [K * m^2, C] -> [K, out_dim]."""
        x = self.norm(x).reshape(-1, x.shape[-1] * self.merge_unit)
        return self.fc2(F.gelu(self.fc1(x)))

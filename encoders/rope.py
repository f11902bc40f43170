"""Spatio-temporal rotary frequencies: which axis each rotation pair follows, and at what frequency.

Each axis a in `config.rope_axes` owns a band of `n_a = config.rope_pairs[a]` consecutive pairs
(channel order = axis order), and within its band pair j turns at `theta ** (-j / n_a)`: every
axis gets a full geometric ladder of its own, so rotations on different axes commute
(ARCHITECTURE.md, rule 3). With axes ("h", "w") and an even split this is exactly Qwen2.5-VL's
vision RoPE (`inv_freq = 1 / theta ** (arange(0, D/2, 2) / (D/2))` for h, the same for w,
concatenated [h | w] over the first half of the head and repeated over the second).

Coordinates are the patch's (t, h, w): t = tubelet index, h/w = patch row/column in the
14 px grid. They stay int64 until the angle is formed in float32 (rule 2); the rotation itself is
`kernels.rotary.apply_rotary`.
"""

from __future__ import annotations

import torch

from encoders.config import AXES, EncoderConfig


def rope_tables(config: EncoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(inv_freq [D/2] float32, pair_axis [D/2] int64 column of the (t, h, w) coordinate)."""
    freqs, axes = [], []
    for axis, n in zip(config.rope_axes, config.rope_pairs):
        j = torch.arange(0, 2 * n, 2, dtype=torch.float32)
        # Same expression (and float32 rounding) as Qwen2.5-VL's compute_axial_rope_parameters.
        freqs.append(1.0 / (config.rope_theta ** (j / (2 * n))))
        axes.append(torch.full((n,), AXES.index(axis), dtype=torch.int64))
    return torch.cat(freqs), torch.cat(axes)


def rope_angles(coords: torch.Tensor, inv_freq: torch.Tensor, pair_axis: torch.Tensor) -> torch.Tensor:
    """coords [N, 3] int64 (t, h, w) -> angles [N, D/2] float32 (for inspection and tests)."""
    if coords.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"rope_angles: coords must be integer or float32, got {coords.dtype}")
    return coords.to(torch.float32)[:, pair_axis] * inv_freq

"""M-RoPE position ids for a prompt whose video part is a (possibly compressed) `VisualTokens`.

Pure functions, no model. ARCHITECTURE.md "Positions: the rules", rule 4, in Qwen2.5-VL semantics:

- a video token at grid (t, h, w) gets rows (s + floor(t * interval), s + h, s + w), where s is the
  position right after the text before the video and interval = second_per_grid * tokens_per_second
  (second_per_grid = temporal_patch_size / sampled_fps, the *actual* sampling rate);
- text after the video continues from a point computed over the *uncompressed* grid, so no
  position depends on which tokens were dropped;
- generation continues from the largest prompt position (uncompressed) + 1.

Where the text after a video starts (`text_after`):
- "spatial": s + max(H, W). This is what transformers 5.x `Qwen2_5_VLModel.get_rope_index` does
  (the installed reference that `generate` uses), so it is the default: with compression off our
  answers are token-for-token transformers'.
- "max": s + (largest position the uncompressed video uses) + 1, as Qwen2.5-VL's original
  reference code and vLLM do. It differs from "spatial" only when the video's temporal span
  floor((T-1) * interval) reaches max(H, W) (long videos on small grids).

Position modes (`mode`):
- "keep": every kept token at its original (t, h, w) position (default).
- "compact": a baseline that renumbers the kept tokens as a dense 1-D stream s, s+1, ... (the
  positions they would get if the kept tokens were ordinary text); text continues after them.
- "centroid": a multi-position mode for merged tokens (rule 5). A row that absorbed other tokens
  (`VisualTokens.members`) enters at the mean of its members' keep positions, row by row:
  mean_m (s + floor(t_m * interval), s + h_m, s + w_m), a fractional float32 position. Rows that
  absorbed nothing keep their keep position exactly; text after the video and generation follow
  the keep rules (uncompressed grid). With nothing merged, centroid == keep value for value.

Rule 2: the temporal scaling is done in float32 from integer grid indices, then floored to int64,
exactly as transformers does (`(arange(T) * interval).long()` with a float32 interval). Position
ids are int64, except in "centroid" mode, where the whole prompt's ids are float32 (never bf16 or
fp16). transformers' Qwen2.5-VL text model accepts that: its rotary embedding casts position_ids
with `.float()` before the product with inv_freq, and with 3-row position ids neither the causal
mask nor the KV cache reads them. float32 holds every integer position below 2**24 exactly; a
centroid is the exact member sum (int64) divided once in float64, then rounded once to float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from encoders.tokens import Members

POSITION_MODES = ("keep", "compact", "centroid")
TEXT_AFTER_RULES = ("spatial", "max")
# float32 position ids are exact integers below this; centroid mode refuses prompts that reach it.
FLOAT32_EXACT = 2**24


@dataclass(frozen=True)
class VideoSpan:
    """The video part of a prompt: the tokens that enter the LLM, in entry order.

    pos: [N, 3] int64 (t, h, w) on the uncompressed LLM grid (VisualTokens.pos of one video).
    grid: (T, H, W) uncompressed LLM grid (tubelets, merged rows, merged columns).
    second_per_grid: seconds one tubelet spans, temporal_patch_size / sampled_fps.
    members: the original (t, h, w) each row absorbed (VisualTokens.members, N rows), or None when
        nothing was merged; only "centroid" mode reads it.
    """

    pos: torch.Tensor
    grid: tuple[int, int, int]
    second_per_grid: float
    members: Members | None = None

    def __post_init__(self):
        if self.pos.dtype != torch.int64 or self.pos.ndim != 2 or self.pos.shape[1] != 3:
            raise ValueError(f"VideoSpan.pos must be int64 [N, 3], got {self.pos.dtype} {tuple(self.pos.shape)}")
        if len(self.grid) != 3 or min(int(g) for g in self.grid) < 1:
            raise ValueError(f"VideoSpan.grid must be three positive ints (T, H, W), got {self.grid}")
        if not self.second_per_grid > 0:
            raise ValueError(f"VideoSpan.second_per_grid must be > 0, got {self.second_per_grid}")
        if self.pos.numel():
            hi = torch.tensor([int(g) for g in self.grid])
            if bool((self.pos < 0).any()) or bool((self.pos >= hi).any()):
                raise ValueError(f"VideoSpan.pos has (t, h, w) outside the grid {tuple(self.grid)}")
        if self.members is not None:
            _check_members(self.members, self.pos.shape[0], self.grid)


@dataclass(frozen=True)
class PromptPositions:
    """position_ids: [3, L] int64 (float32 in "centroid" mode) for the L prompt tokens;
    next_position: first generated token's position."""

    position_ids: torch.Tensor
    next_position: int

    def __post_init__(self):
        # Rule 2: integer or float32 positions, never bf16/fp16.
        p = self.position_ids
        if p.dtype not in (torch.int64, torch.float32) or p.ndim != 2 or p.shape[0] != 3:
            raise ValueError(f"PromptPositions.position_ids must be int64 or float32 [3, L], got {p.dtype} {tuple(p.shape)}")

    @property
    def rope_delta(self) -> int:
        """transformers' `rope_deltas`: generated token k (0-based) sits at L + k + rope_delta."""
        return self.next_position - int(self.position_ids.shape[1])


def temporal_interval(second_per_grid: float, tokens_per_second: float) -> torch.Tensor:
    """0-dim float32: temporal position step per tubelet (same float32 arithmetic as transformers)."""
    return torch.tensor(second_per_grid, dtype=torch.float32) * tokens_per_second


def temporal_positions(t_index: torch.Tensor, interval: torch.Tensor) -> torch.Tensor:
    """[N] int64 tubelet index -> [N] int64 floor(t * interval), computed in float32 (rule 2)."""
    return (t_index.to(torch.float32) * interval.to(torch.float32)).long()


def video_position_ids(span: VideoSpan, start: int, tokens_per_second: float, mode: str = "keep") -> torch.Tensor:
    """[3, N] positions of the span's tokens, the text before them ending at `start` - 1.

    int64 in "keep" and "compact" mode, float32 in "centroid" mode.
    """
    _check_mode(mode)
    n = span.pos.shape[0]
    if mode == "compact":
        return (torch.arange(n, dtype=torch.int64) + start).view(1, -1).expand(3, -1).clone()
    interval = temporal_interval(span.second_per_grid, tokens_per_second)
    keep = grid_offsets(span.pos, interval) + start
    if mode == "keep":
        return keep
    if span.members is None:
        return keep.to(torch.float32)
    return centroid_positions(keep, span.members, interval, start)


def grid_offsets(pos: torch.Tensor, interval: torch.Tensor) -> torch.Tensor:
    """[N, 3] int64 (t, h, w) -> [3, N] int64 keep offsets (floor(t * interval), h, w) from the video's start."""
    return torch.stack([temporal_positions(pos[:, 0], interval), pos[:, 1], pos[:, 2]], 0)


def centroid_positions(keep: torch.Tensor, members: Members, interval: torch.Tensor, start: int) -> torch.Tensor:
    """[3, N] float32: each row's mean member position, or its keep position where it has no members.

    keep: [3, N] int64 keep positions (start included); members: N rows of original (t, h, w).
    Each member sits where keep mode would put it, s + (floor(t * interval), h, w); the mean is the
    exact int64 sum over a row's members divided once in float64, so a one-member row is its keep
    position bit for bit.
    """
    counts = members.offsets[1:] - members.offsets[:-1]  # [N]
    row = torch.repeat_interleave(torch.arange(counts.numel()), counts)  # [M] row of each member
    sums = torch.zeros_like(keep).index_add_(1, row, grid_offsets(members.pos, interval) + start)
    has = counts > 0
    out = keep.to(torch.float64)
    out[:, has] = sums[:, has].to(torch.float64) / counts[has].to(torch.float64)
    return out.to(torch.float32)


def uncompressed_max_offset(grid: tuple[int, int, int], second_per_grid: float, tokens_per_second: float) -> int:
    """Largest position offset (from the video's start) any token of the uncompressed grid uses."""
    t, h, w = (int(g) for g in grid)
    t_last = int(temporal_positions(torch.tensor([t - 1]), temporal_interval(second_per_grid, tokens_per_second))[0])
    return max(t_last, h - 1, w - 1)


def text_after_offset(span: VideoSpan, tokens_per_second: float, mode: str = "keep", text_after: str = "spatial") -> int:
    """How far past the video's start position the following text starts."""
    _check_mode(mode)
    if text_after not in TEXT_AFTER_RULES:
        raise ValueError(f"text_after must be one of {TEXT_AFTER_RULES}, got {text_after!r}")
    if mode == "compact":
        return int(span.pos.shape[0])
    if text_after == "spatial":
        return max(int(span.grid[1]), int(span.grid[2]))
    return uncompressed_max_offset(span.grid, span.second_per_grid, tokens_per_second) + 1


def prompt_position_ids(
    segments: list[int | VideoSpan],
    tokens_per_second: float,
    mode: str = "keep",
    text_after: str = "spatial",
) -> PromptPositions:
    """Positions for a prompt made of text runs (an int: its token count) and video spans, in order.

    Returns [3, L] position ids (L = text tokens + kept video tokens; int64, float32 in "centroid"
    mode) and the position the first generated token takes: the largest position the prompt would
    use uncompressed, + 1 ("keep" and "centroid"), or after the last renumbered token ("compact").
    """
    _check_mode(mode)
    parts, cur, top = [], 0, -1
    for seg in segments:
        if isinstance(seg, VideoSpan):
            parts.append(video_position_ids(seg, cur, tokens_per_second, mode))
            if mode != "compact":
                top = max(top, cur + uncompressed_max_offset(seg.grid, seg.second_per_grid, tokens_per_second))
            elif seg.pos.shape[0]:
                top = max(top, cur + int(seg.pos.shape[0]) - 1)
            cur += text_after_offset(seg, tokens_per_second, mode, text_after)
        else:
            n = int(seg)
            if n < 0:
                raise ValueError(f"text run length must be >= 0, got {n}")
            parts.append((torch.arange(n, dtype=torch.int64) + cur).view(1, -1).expand(3, -1))
            if n:
                top = max(top, cur + n - 1)
            cur += n
    dtype = torch.float32 if mode == "centroid" else torch.int64
    if dtype == torch.float32 and max(cur, top + 1) >= FLOAT32_EXACT:
        raise ValueError(f"centroid positions reach {max(cur, top + 1)}; float32 holds integers exactly only below {FLOAT32_EXACT}")
    position_ids = torch.cat([p.to(dtype) for p in parts], 1) if parts else torch.zeros(3, 0, dtype=dtype)
    return PromptPositions(position_ids=position_ids.contiguous(), next_position=top + 1)


def generation_position_ids(next_position: int, count: int, offset: int = 0) -> torch.Tensor:
    """[3, count] int64 positions of generated tokens offset .. offset+count-1 (all rows equal)."""
    return (torch.arange(offset, offset + count, dtype=torch.int64) + next_position).view(1, -1).expand(3, -1).clone()


def _check_members(members: Members, n: int, grid: tuple[int, int, int]) -> None:
    if members.offsets.numel() != n + 1:
        raise ValueError(f"VideoSpan.members has {members.offsets.numel() - 1} rows, pos has {n}")
    if bool((members.offsets[1:] < members.offsets[:-1]).any()):
        raise ValueError("VideoSpan.members.offsets must be non-decreasing")
    if members.pos.numel():
        hi = torch.tensor([int(g) for g in grid])
        if bool((members.pos < 0).any()) or bool((members.pos >= hi).any()):
            raise ValueError(f"VideoSpan.members has (t, h, w) outside the grid {tuple(grid)}")


def _check_mode(mode: str) -> None:
    if mode not in POSITION_MODES:
        raise ValueError(f"position mode must be one of {POSITION_MODES}, got {mode!r}")

"""`codec`: keep the cells where the video codec saw change; drop what it says is static.

Idea: compressed-domain video understanding (e.g. CoViAR, Wu et al. CVPR 2018; EMA, Zhao et al.
2025): motion vectors and residuals already say which regions changed, so a static region need
not be encoded twice. Own code. Per merged cell (28 px) and tubelet, the score is the codec's
motion (mean |MV| or residual, `CodecSignals.motion`) pooled by area over the cell and as the max
over the tubelet's frames. Keyframe / I-frame tubelets and the first tubelet are scene starts and
get the higher floor (`tokencomp.budget.tubelet_floors`); the rest of the budget goes to the
strongest signal, globally (a busy stretch takes tokens from a static one).

Two placements:
- after the encoder: the registered strategy `codec` drops tokens (the encoder ran on everything,
  so kept tokens are exact);
- before the encoder: `select_cells(signals, grid_thw, budget)` returns the [T, H, W] bool cell
  mask that the pipeline hands to the encoder's subset encoding, so dropped cells are never encoded.
Both use the same scores and the same selection, so they choose the same cells when the
embedding-based scene test finds nothing extra.
"""

from __future__ import annotations

import numpy as np
import torch

from encoders.errors import BadRequest
from encoders.signals import CodecSignals
from tokencomp.budget import Budget, scene_starts, tubelet_floors
from tokencomp.plan import Plan, select_top
from tokencomp.registry import StrategyInput, keyframe_tubelets, register_strategy

MERGED_CELL_PX = 28  # a merged LLM cell = 2x2 patches of 14 px


def _area_weights(n_tok: int, n_sig: int, cell_px: int) -> torch.Tensor:
    """[n_tok, n_sig] float32: fraction of token cell i covered by signal cell j (rows sum to 1).

    Token cells are MERGED_CELL_PX wide, signal cells `cell_px`. When the two grids describe frames
    of clearly different sizes (more than one signal cell apart, e.g. signals on the source frame
    and tokens on the resized one), signal edges are scaled to the token frame.
    """
    tok = torch.arange(n_tok + 1, dtype=torch.float64) * MERGED_CELL_PX
    sig = torch.arange(n_sig + 1, dtype=torch.float64) * cell_px
    if abs(n_sig * cell_px - n_tok * MERGED_CELL_PX) >= cell_px:
        sig = sig * (n_tok * MERGED_CELL_PX) / (n_sig * cell_px)
    overlap = (torch.minimum(tok[1:, None], sig[None, 1:]) - torch.maximum(tok[:-1, None], sig[None, :-1])).clamp_min(0)
    return (overlap / overlap.sum(1, keepdim=True).clamp_min(1e-9)).float()


def motion_grid(signals: CodecSignals, grid_thw) -> torch.Tensor:
    """CodecSignals -> [T, H, W] float32 motion per tubelet and merged cell.

    Spatially: area-weighted mean of the signal cells under each 28 px cell. Temporally: max over
    the tubelet's frames (2t, 2t + 1; the last tubelet has one frame when F is odd), so motion in
    either frame counts.
    """
    t, h, w = (int(v) for v in grid_thw)
    f = signals.num_frames
    if not (2 * t - 1 <= f <= 2 * t):
        raise ValueError(f"motion_grid: {f} sampled frames of codec signals do not make {t} tubelets of 2 frames")
    m = torch.from_numpy(np.ascontiguousarray(signals.motion, dtype=np.float32))
    ah = _area_weights(h, m.shape[1], signals.cell_px)
    aw = _area_weights(w, m.shape[2], signals.cell_px)
    pooled = ah @ m @ aw.T  # [F, H, W]
    if f < 2 * t:
        pooled = torch.cat([pooled, pooled[-1:]], 0)
    return pooled.view(t, 2, h, w).amax(1)


def _row_scores(grid_scores: torch.Tensor, pos: torch.Tensor, members) -> torch.Tensor:
    """[T, H, W] scores -> [N] per row: the max over the original cells a row stands for."""
    if members is None:
        return grid_scores[pos[:, 0], pos[:, 1], pos[:, 2]]
    mp = members.pos.cpu()
    per_member = grid_scores[mp[:, 0], mp[:, 1], mp[:, 2]]
    lens = members.offsets[1:] - members.offsets[:-1]
    row = torch.repeat_interleave(torch.arange(lens.numel()), lens.cpu())
    return torch.full((lens.numel(),), float("-inf")).scatter_reduce(0, row, per_member, "amax")


@register_strategy("codec")
def select_by_codec(x: StrategyInput) -> Plan:
    """Keep scene-start floors, then the cells with the strongest codec signal (after the encoder)."""
    if x.signals is None:
        raise BadRequest("strategy 'codec' needs codec signals: decode with signals on (pipeline decode stage)")
    scores = _row_scores(motion_grid(x.signals, x.grid), x.pos, x.members)
    return Plan.keep(select_top(scores, x.tubelet, x.floors, x.target), x.num_rows)


def select_cells(signals: CodecSignals, grid_thw, budget: Budget) -> torch.Tensor:
    """Before the encoder: [T, H, W] bool mask of the merged cells to encode.

    signals: the video's CodecSignals (F = 2T or 2T - 1 sampled frames); grid_thw: its uncompressed
    LLM grid; budget: the request's budget. Keeps at most budget.target_tokens cells; scene starts
    are tubelet 0 and keyframe tubelets (no embeddings exist yet, so no embedding-change test).
    """
    if not isinstance(budget, Budget):
        raise BadRequest(f"budget: expected a tokencomp.Budget, got {type(budget).__name__}")
    t, h, w = (int(v) for v in grid_thw)
    k = budget.target_tokens((t, h, w), signals.num_frames)
    scores = motion_grid(signals, (t, h, w)).flatten()
    tubelet = torch.arange(t).repeat_interleave(h * w)
    scenes = scene_starts(t, keyframe_tubelets(signals, t))
    floors = tubelet_floors(torch.full((t,), h * w, dtype=torch.int64), k, scenes, budget)
    mask = torch.zeros(t * h * w, dtype=torch.bool)
    mask[select_top(scores, tubelet, floors, k)] = True
    return mask.view(t, h, w)

"""Where every kept patch of a packed call goes: its row in pixel_values, its (t, h, w), its window.

Pure index arithmetic, no weights. Units: a *patch* is one 14 px x 14 px x 2-frame tubelet
patch (one row of Hugging Face's flattened `pixel_values`); a *cell* is the 2x2 block of patches
the merger turns into one LLM token. HF's row order per video is (t, cell_row, cell_col, i, j):
each cell's 4 patches are consecutive.

Processing order follows Qwen2.5-VL: tokens are sorted by (video, tubelet, window row, window col,
cell row, cell col), so every attention segment (a window, a tubelet, a video) is a contiguous run
and packed attention is block-diagonal. Subset encoding only drops cells from this order: windows
are formed among the kept cells with the same window grid as the full video, so with every cell
kept the layout (and the result) is exactly that of full encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from encoders.config import EncoderConfig
from encoders.errors import BadRequest
from encoders.tokens import grid_positions


@dataclass(frozen=True)
class PackLayout:
    """Index plan for one packed encoder call over V videos, K kept cells, P = K * m^2 patches.

    patch_rows: [P] int64 rows of the full pixel_values, in processing order.
    patch_coords: [P, 3] int64 (t, h, w) of each patch in 14 px patch units, processing order.
    window_seqlens / full_seqlens: patch counts of consecutive attention segments (window layers /
        full layers); window_seqlens is None when the config has no window layers.
    perm: [K] int64 output-order index of each processing-order cell (processing = output[perm]).
    restore: [K] int64; merged[restore] puts the processing-order cells back in output order.
    cell_pos: [K, 3] int64 (t, h, w) on the merged LLM grid, output order (video, t, h, w).
    cell_video: [K] int64 video index of each output cell.
    cells_per_video: [V] kept cells per video; grids: [V, 3] merged (T, H, W) grids.
    """

    patch_rows: torch.Tensor
    patch_coords: torch.Tensor
    window_seqlens: list[int] | None
    full_seqlens: list[int]
    perm: torch.Tensor
    restore: torch.Tensor
    cell_pos: torch.Tensor
    cell_video: torch.Tensor
    cells_per_video: list[int]
    grids: torch.Tensor

    @property
    def num_patches(self) -> int:
        return int(self.patch_rows.shape[0])


def check_grid(grid_thw: torch.Tensor, config: EncoderConfig) -> torch.Tensor:
    """grid_thw [V, 3] in patch units -> merged grids [V, 3] int64; raises BadRequest on bad shapes."""
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3 or grid_thw.shape[0] < 1:
        raise BadRequest(f"grid_thw must be [V, 3] (tubelets, patch rows, patch cols), got {tuple(grid_thw.shape)}")
    g = grid_thw.to(torch.int64).cpu()
    m = config.spatial_merge_size
    for v, (t, h, w) in enumerate(g.tolist()):
        if t < 1 or h < 1 or w < 1 or h % m or w % m:
            raise BadRequest(
                f"grid_thw[{v}] = {(t, h, w)}: needs t >= 1 and h, w positive multiples of the merge size {m} "
                f"(frames must be resized to multiples of {m * config.patch_size} px)"
            )
    return torch.stack([g[:, 0], g[:, 1] // m, g[:, 2] // m], 1)


def check_masks(cell_mask, grids: torch.Tensor) -> list[torch.Tensor | None]:
    """Normalize `cell_mask` (None, a tensor for one video, or a list per video) to a list of bool [T, H, W] or None."""
    v = grids.shape[0]
    if cell_mask is None:
        return [None] * v
    masks = [cell_mask] if isinstance(cell_mask, torch.Tensor) else list(cell_mask)
    if len(masks) != v:
        raise BadRequest(f"cell_mask: got {len(masks)} masks for {v} videos")
    out = []
    for i, (mask, grid) in enumerate(zip(masks, grids.tolist())):
        if mask is None:
            out.append(None)
            continue
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(grid):
            raise BadRequest(
                f"cell_mask[{i}] must be bool {tuple(grid)} (tubelets, merged rows, merged cols), "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        out.append(mask.cpu())
    return out


def _runs(keys: torch.Tensor) -> list[int]:
    """Lengths of runs of equal consecutive values in a [K] int64 tensor."""
    if keys.numel() == 0:
        return []
    _, counts = torch.unique_consecutive(keys, return_counts=True)
    return counts.tolist()


def build_layout(grid_thw: torch.Tensor, config: EncoderConfig, cell_mask=None) -> PackLayout:
    """Plan a packed call. grid_thw [V, 3] patch units; cell_mask: None | bool [T, H/m, W/m] | list per video."""
    grids = check_grid(grid_thw, config)
    masks = check_masks(cell_mask, grids)
    m = config.spatial_merge_size
    unit = m * m
    ws = config.window_cells

    cells, video_of, row_base = [], [], []
    base = 0
    for v, ((t, h, w), mask) in enumerate(zip(grids.tolist(), masks)):
        kept = mask.nonzero() if mask is not None else grid_positions(t, h, w)  # [K_v, 3] raster order
        cells.append(kept)
        video_of.append(torch.full((kept.shape[0],), v, dtype=torch.int64))
        # Patch row of a cell's first patch: the cell's raster index in the full video times m^2.
        row_base.append(base + (kept[:, 0] * h * w + kept[:, 1] * w + kept[:, 2]) * unit)
        base += t * h * w * unit
    cell_pos = torch.cat(cells).to(torch.int64)  # output order: (video, t, h, w)
    cell_video = torch.cat(video_of)
    rows0 = torch.cat(row_base)
    k = cell_pos.shape[0]

    # Segment keys, as mixed-radix integers so sorting and run-finding are one tensor op each.
    # Radix per field (not one shared base) so the keys stay far from int64 overflow on long videos.
    t_max, h_max, w_max = (int(x) + 1 for x in grids.max(0).values)
    tube_key = cell_video * t_max + cell_pos[:, 0]
    if ws is not None:
        nwh, nww = -(-h_max // ws), -(-w_max // ws)
        win_key = (tube_key * nwh + cell_pos[:, 1] // ws) * nww + cell_pos[:, 2] // ws
        # Within a window, raster order; (h % ws, w % ws) is raster order inside one window.
        order_key = (win_key * ws + cell_pos[:, 1] % ws) * ws + cell_pos[:, 2] % ws
        perm = torch.argsort(order_key, stable=True)
    else:
        win_key = None
        perm = torch.arange(k)  # raster order already groups tubelets and videos
    restore = torch.argsort(perm)

    full_key = tube_key if config.full_attention_span == "tubelet" else cell_video
    window_seqlens = None if win_key is None else [n * unit for n in _runs(win_key[perm])]
    full_seqlens = [n * unit for n in _runs(full_key[perm])]

    # Expand cells to patches: patch (i, j) of a cell sits at row base + i*m + j, coords (t, h*m+i, w*m+j).
    ij = torch.arange(unit)
    pc = cell_pos[perm]
    patch_rows = (rows0[perm][:, None] + ij[None, :]).reshape(-1)
    patch_coords = torch.stack(
        [
            pc[:, 0:1].expand(-1, unit),
            pc[:, 1:2] * m + (ij // m)[None, :],
            pc[:, 2:3] * m + (ij % m)[None, :],
        ],
        -1,
    ).reshape(-1, 3)
    return PackLayout(
        patch_rows=patch_rows,
        patch_coords=patch_coords,
        window_seqlens=window_seqlens,
        full_seqlens=full_seqlens,
        perm=perm,
        restore=restore,
        cell_pos=cell_pos,
        cell_video=cell_video,
        cells_per_video=[int(c.shape[0]) for c in cells],
        grids=grids,
    )


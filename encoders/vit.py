"""`VisionEncoder`: packed, subset-capable vision transformer for both encoder families.

    pixel_values [P, C*tp*p*p] --(layout: kept cells, window order)--> patch_embed --> blocks
    (window / full attention, (t, h, w) RoPE) --> merger (2x2 -> 1) --> VisualTokens

One code path serves full and subset encoding: full encoding is subset encoding with every cell
kept, so "all cells selected == full" holds bit for bit, and a subset really skips the work of
the dropped cells (they never enter the patch embedding).

Precision: float32 on CPU; on GPU the weights may be bf16/fp16 while RoPE angles, norms and the
attention softmax stay in float32 (see kernels/rotary.py, encoders/attention.py).
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.blocks import AbsPosEmbed, Block, PatchEmbed, PatchMerger
from encoders.config import AXES, EncoderConfig
from encoders.errors import BadRequest
from encoders.layout import PackLayout, build_layout
from encoders.rope import rope_tables
from encoders.tokens import VisualTokens


class VisionEncoder(nn.Module):
    """Vision tower built from an `EncoderConfig` (`qwen2_5_vl` or `st3d` family)."""

    def __init__(self, config: EncoderConfig, attn_backend: str = "auto"):
        super().__init__()
        self.config = config
        self.attn_backend = attn_backend
        c = config
        self.patch_embed = PatchEmbed(c.in_channels, c.temporal_patch_size, c.patch_size, c.hidden_size)
        self.abs_pos = (AbsPosEmbed(tuple(AXES.index(a) for a in c.abs_pos_axes), c.abs_pos_pairs, c.hidden_size)
                        if c.abs_pos_axes else None)
        self.blocks = nn.ModuleList(
            Block(c.hidden_size, c.num_heads, c.intermediate_size, c.hidden_act, c.norm_eps) for _ in range(c.depth)
        )
        self.merger = PatchMerger(c.hidden_size, c.out_hidden_size, c.merge_unit)
        inv_freq, pair_axis = rope_tables(c)
        # Non-persistent: derived from the config, recomputed in float32, never saved or cast to bf16.
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("pair_axis", pair_axis, persistent=False)

    def _apply(self, fn, recurse=True):
        # Module.half()/.to(bf16) would also cast the frequency buffer; keep it float32 (rule 2).
        out = super()._apply(fn, recurse)
        self.inv_freq = self.inv_freq.float()
        if self.abs_pos is not None:
            self.abs_pos.freq = self.abs_pos.freq.float()
        return out

    # ---- tensors in, tensors out ------------------------------------------------------------

    def forward_layout(self, patches: torch.Tensor, layout: PackLayout) -> torch.Tensor:
        """patches: [P, C*tp*p*p] in the layout's processing order -> merged [K, out] in output order."""
        device = self.patch_embed.proj.weight.device
        if layout.num_patches == 0:
            return torch.zeros(0, self.config.out_hidden_size, device=device, dtype=self.patch_embed.proj.weight.dtype)
        coords = layout.patch_coords.to(device)
        x = self.patch_embed(patches.to(device))
        if self.abs_pos is not None:
            x = x + self.abs_pos(coords)
        for is_full, block in zip(self.config.layer_is_full, self.blocks):
            seqlens = layout.full_seqlens if is_full else layout.window_seqlens
            x = block(x, coords, self.inv_freq, self.pair_axis, seqlens, self.attn_backend)
        return self.merger(x)[layout.restore.to(device)]

    def select_patches(self, pixel_values: torch.Tensor, layout: PackLayout) -> torch.Tensor:
        """Rows of `pixel_values` for the layout, in processing order.

        pixel_values: [P_all, C*tp*p*p] for every patch of every video (HF layout), or only the kept
        cells' patches ([K*m^2, ...], kept cells in (video, t, h, w) order, each cell's m^2 rows
        consecutive), so callers that preprocess only selected cells need not fill the rest.
        """
        total = int((layout.grids.prod(1) * self.config.merge_unit).sum())
        if pixel_values.ndim != 2 or pixel_values.shape[1] != self.config.patch_dim:
            raise BadRequest(
                f"pixel_values must be [patches, {self.config.patch_dim}] (C*tp*p*p), got {tuple(pixel_values.shape)}"
            )
        rows = pixel_values.shape[0]
        if rows == total:
            return pixel_values[layout.patch_rows.to(pixel_values.device)]
        if rows == layout.num_patches:
            unit = self.config.merge_unit
            idx = (layout.perm[:, None] * unit + torch.arange(unit)[None, :]).reshape(-1)
            return pixel_values[idx.to(pixel_values.device)]
        raise BadRequest(
            f"pixel_values has {rows} rows; grid_thw needs {total} (all patches) or {layout.num_patches} (kept cells only)"
        )

    # ---- the public entry point -------------------------------------------------------------

    def encode(
        self,
        pixel_values: torch.Tensor,
        grid_thw: torch.Tensor,
        tubelet_time_s: list[torch.Tensor],
        cell_mask: list[torch.Tensor | None] | torch.Tensor | None = None,
    ) -> VisualTokens:
        """Encode V packed videos (an image is a T=1 video) into LLM-width tokens.

        pixel_values: [P, C*tp*p*p] HF-layout flattened patches (see `select_patches`).
        grid_thw: [V, 3] (tubelets, patch rows, patch cols) per video, like HF's video_grid_thw.
        tubelet_time_s: per video a [T_v] tensor, seconds of each tubelet's first frame.
        cell_mask: None (every cell) or per video None / bool [T_v, H_v/2, W_v/2] over merged cells;
            only kept cells are encoded, at their true (t, h, w), attending among themselves.
        Returns VisualTokens with embeds [K, out_hidden_size], pos = kept cells' (t, h, w) on the
        merged grid in (video, t, h, w) order, weight 1, and grids [V, 3] merged (T, H/2, W/2).
        Gradients flow (wrap in torch.no_grad() for inference).
        """
        layout = build_layout(grid_thw, self.config, cell_mask)
        times = _check_times(tubelet_time_s, layout.grids)
        embeds = self.forward_layout(self.select_patches(pixel_values, layout), layout)
        n = embeds.shape[0]
        time_s = torch.cat([times[v][layout.cell_pos[layout.cell_video == v, 0]] for v in range(len(times))])
        return VisualTokens(
            embeds=embeds,
            pos=layout.cell_pos,
            time_s=time_s,
            weight=torch.ones(n, dtype=torch.int64),
            video_id=layout.cell_video,
            grids=layout.grids,
        )


def _check_times(tubelet_time_s, grids: torch.Tensor) -> list[torch.Tensor]:
    if isinstance(tubelet_time_s, torch.Tensor):
        tubelet_time_s = [tubelet_time_s]
    times = list(tubelet_time_s)
    if len(times) != grids.shape[0]:
        raise BadRequest(f"tubelet_time_s: got {len(times)} entries for {grids.shape[0]} videos")
    out = []
    for v, (ts, t) in enumerate(zip(times, grids[:, 0].tolist())):
        ts = torch.as_tensor(ts, dtype=torch.float32).cpu()
        if ts.shape != (t,):
            raise BadRequest(f"tubelet_time_s[{v}] must be [{t}] (one time per tubelet), got {tuple(ts.shape)}")
        out.append(ts)
    return out

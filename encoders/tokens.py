"""`VisualTokens`: the one type that flows from the encoder through compression into the LLM.

See ARCHITECTURE.md ("The flowing type", "Positions: the rules"). Every row is a token that will
enter the LLM; `pos` is its (t, h, w) on the *uncompressed* LLM grid of its video and is never
renumbered by compression.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class Members:
    """Original positions absorbed by merged tokens, as a CSR table.

    pos: [M, 3] int64 original (t, h, w) positions.
    offsets: [N + 1] int64; row i absorbed `pos[offsets[i]:offsets[i + 1]]`.
    """

    pos: torch.Tensor
    offsets: torch.Tensor

    def __post_init__(self):
        if self.pos.dtype != torch.int64 or self.pos.ndim != 2 or self.pos.shape[1] != 3:
            raise ValueError(f"Members.pos must be int64 [M, 3], got {self.pos.dtype} {tuple(self.pos.shape)}")
        if self.offsets.dtype != torch.int64 or self.offsets.ndim != 1 or self.offsets.numel() < 1:
            raise ValueError(f"Members.offsets must be int64 [N + 1], got {self.offsets.dtype} {tuple(self.offsets.shape)}")
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != self.pos.shape[0]:
            raise ValueError(
                f"Members.offsets must run from 0 to {self.pos.shape[0]}, got "
                f"{int(self.offsets[0])}..{int(self.offsets[-1])}"
            )

    @staticmethod
    def from_lists(groups: list[torch.Tensor]) -> "Members":
        """groups: per row a [k, 3] int64 tensor of absorbed positions (k >= 1)."""
        sizes = torch.tensor([g.shape[0] for g in groups], dtype=torch.int64)
        offsets = torch.zeros(len(groups) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(sizes, 0)
        pos = torch.cat(groups, 0) if groups else torch.zeros(0, 3, dtype=torch.int64)
        return Members(pos=pos.to(torch.int64), offsets=offsets)

    def row(self, i: int) -> torch.Tensor:
        return self.pos[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def select(self, index: torch.Tensor) -> "Members":
        return Members.from_lists([self.row(int(i)) for i in index])


@dataclass(frozen=True)
class VisualTokens:
    """A pack of visual tokens from one or more videos (or images, which are 1-tubelet videos).

    embeds: [N, D] float, already merged to the LLM width.
    pos: [N, 3] int64 (t, h, w) on the LLM grid of the token's video, as assigned uncompressed.
    time_s: [N] float32, timestamp in seconds of the token's tubelet (its first frame).
    weight: [N] int64, how many original tokens the row stands for (1 unless merged).
    video_id: [N] int64, index into `grids`.
    grids: [V, 3] int64, each video's full (T, H, W) LLM grid (T tubelets, H x W merged cells).
    members: for merged streams, the original positions each row absorbed; None when nothing merged.
    """

    embeds: torch.Tensor
    pos: torch.Tensor
    time_s: torch.Tensor
    weight: torch.Tensor
    video_id: torch.Tensor
    grids: torch.Tensor
    members: Members | None = field(default=None)

    def __post_init__(self):
        n = self.embeds.shape[0]
        if self.embeds.ndim != 2:
            raise ValueError(f"VisualTokens.embeds must be [N, D], got {tuple(self.embeds.shape)}")
        # Rule 2: positions are integers, never bf16/fp16.
        if self.pos.dtype != torch.int64 or tuple(self.pos.shape) != (n, 3):
            raise ValueError(f"VisualTokens.pos must be int64 [{n}, 3], got {self.pos.dtype} {tuple(self.pos.shape)}")
        for name, dtype in (("time_s", torch.float32), ("weight", torch.int64), ("video_id", torch.int64)):
            t = getattr(self, name)
            if t.dtype != dtype or tuple(t.shape) != (n,):
                raise ValueError(f"VisualTokens.{name} must be {dtype} [{n}], got {t.dtype} {tuple(t.shape)}")
        if self.grids.dtype != torch.int64 or self.grids.ndim != 2 or self.grids.shape[1] != 3:
            raise ValueError(f"VisualTokens.grids must be int64 [V, 3], got {self.grids.dtype} {tuple(self.grids.shape)}")
        if self.members is not None and self.members.offsets.numel() != n + 1:
            raise ValueError(f"VisualTokens.members has {self.members.offsets.numel() - 1} rows, embeds has {n}")

    # ---- construction -------------------------------------------------------------------------

    @staticmethod
    def full_grid(embeds: torch.Tensor, grid_thw: tuple[int, int, int], tubelet_time_s: torch.Tensor) -> "VisualTokens":
        """Tokens of one uncompressed video in raster (t, h, w) order.

        embeds: [T*H*W, D]; tubelet_time_s: [T] seconds of each tubelet's first frame.
        """
        t, h, w = (int(x) for x in grid_thw)
        if embeds.shape[0] != t * h * w:
            raise ValueError(f"full_grid: grid {t}x{h}x{w} needs {t * h * w} rows, embeds has {embeds.shape[0]}")
        if tubelet_time_s.shape != (t,):
            raise ValueError(f"full_grid: tubelet_time_s must be [{t}], got {tuple(tubelet_time_s.shape)}")
        pos = grid_positions(t, h, w)
        n = pos.shape[0]
        return VisualTokens(
            embeds=embeds,
            pos=pos,
            time_s=tubelet_time_s.to(torch.float32)[pos[:, 0]],
            weight=torch.ones(n, dtype=torch.int64),
            video_id=torch.zeros(n, dtype=torch.int64),
            grids=torch.tensor([[t, h, w]], dtype=torch.int64),
        )

    @staticmethod
    def cat(packs: list["VisualTokens"]) -> "VisualTokens":
        """Concatenate packs into one; video ids are renumbered to index the joined `grids`."""
        if not packs:
            raise ValueError("VisualTokens.cat needs at least one pack")
        offsets, off = [], 0
        for p in packs:
            offsets.append(off)
            off += p.grids.shape[0]
        members = None
        if any(p.members is not None for p in packs):
            members = Members.from_lists([g for p in packs for g in p.member_groups()])
        return VisualTokens(
            embeds=torch.cat([p.embeds for p in packs], 0),
            pos=torch.cat([p.pos for p in packs], 0),
            time_s=torch.cat([p.time_s for p in packs], 0),
            weight=torch.cat([p.weight for p in packs], 0),
            video_id=torch.cat([p.video_id + o for p, o in zip(packs, offsets)], 0),
            grids=torch.cat([p.grids for p in packs], 0),
            members=members,
        )

    @staticmethod
    def join_time(chunks: list["VisualTokens"]) -> "VisualTokens":
        """One video from consecutive time chunks of it, each encoded as its own video.

        Chunk k's tubelets follow chunk k-1's: its t is shifted by the tubelets before it, so every
        token lands at the (t, h, w) it has on the whole video's grid (rule 1). Chunks must be
        single, uncompressed videos with the same (H, W).
        """
        if not chunks:
            raise ValueError("VisualTokens.join_time needs at least one chunk")
        if any(c.num_videos != 1 or c.members is not None for c in chunks):
            raise ValueError("VisualTokens.join_time takes single-video, unmerged chunks")
        hw = {tuple(int(x) for x in c.grids[0, 1:]) for c in chunks}
        if len(hw) != 1:
            raise ValueError(f"VisualTokens.join_time: chunks have different (H, W) grids {sorted(hw)}")
        shifts = torch.tensor([0] + [int(c.grids[0, 0]) for c in chunks[:-1]]).cumsum(0)
        pos = torch.cat([c.pos + torch.tensor([int(dt), 0, 0]) for c, dt in zip(chunks, shifts)], 0)
        total_t = int(shifts[-1]) + int(chunks[-1].grids[0, 0])
        return VisualTokens(
            embeds=torch.cat([c.embeds for c in chunks], 0),
            pos=pos,
            time_s=torch.cat([c.time_s for c in chunks], 0),
            weight=torch.cat([c.weight for c in chunks], 0),
            video_id=torch.zeros(pos.shape[0], dtype=torch.int64),
            grids=torch.tensor([[total_t, *hw.pop()]], dtype=torch.int64),
        )

    # ---- views --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def num_videos(self) -> int:
        return int(self.grids.shape[0])

    @property
    def tokens_uncompressed(self) -> int:
        """Tokens the pack's videos would have with no compression (sum of T*H*W)."""
        return int(self.grids.prod(dim=1).sum())

    def member_groups(self) -> list[torch.Tensor]:
        """Per row the [k, 3] original positions it stands for (itself when nothing was merged)."""
        if self.members is None:
            return [self.pos[i : i + 1] for i in range(len(self))]
        return [self.members.row(i) for i in range(len(self))]

    def select(self, index: torch.Tensor) -> "VisualTokens":
        """Rows `index` (a [K] int64 tensor or [N] bool mask), in the order given."""
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.to(torch.int64)
        return replace(
            self,
            embeds=self.embeds[index],
            pos=self.pos[index],
            time_s=self.time_s[index],
            weight=self.weight[index],
            video_id=self.video_id[index],
            members=None if self.members is None else self.members.select(index),
        )

    def sorted(self) -> "VisualTokens":
        """Rows in original order: by video, then (t, h, w)."""
        return self.select(self.sort_index())

    def sort_index(self) -> torch.Tensor:
        grid_max = int(self.grids.max()) + 1 if self.grids.numel() else 1
        key = ((self.video_id * grid_max + self.pos[:, 0]) * grid_max + self.pos[:, 1]) * grid_max + self.pos[:, 2]
        return torch.argsort(key, stable=True)

    def split(self) -> list["VisualTokens"]:
        """One pack per video, each with video_id 0 and its own single-row grid."""
        out = []
        for v in range(self.num_videos):
            idx = (self.video_id == v).nonzero().flatten()
            part = self.select(idx)
            out.append(replace(part, video_id=torch.zeros_like(part.video_id), grids=self.grids[v : v + 1].clone()))
        return out

    def to(self, device=None, dtype=None) -> "VisualTokens":
        """Move embeds (and only embeds take `dtype`; positions stay int64)."""
        return replace(
            self,
            embeds=self.embeds.to(device=device, dtype=dtype),
            pos=self.pos.to(device),
            time_s=self.time_s.to(device),
            weight=self.weight.to(device),
            video_id=self.video_id.to(device),
            grids=self.grids.to(device),
        )


def grid_positions(t: int, h: int, w: int) -> torch.Tensor:
    """[t*h*w, 3] int64 (t, h, w) positions in raster order."""
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt.flatten(), hh.flatten(), ww.flatten()], 1).to(torch.int64)

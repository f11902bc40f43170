"""Token budgets: how many visual tokens a request may send, and how they spread over time.

A `Budget` is part of a request (never a server-wide constant). It turns into a token count per
video (`Budget.target_tokens`), and that count is spread across tubelets by
`tubelet_floors` (the guaranteed minimum per tubelet, higher at scene starts) and `allocate`
(content-adaptive: a static stretch gives its tokens to a busy one). Everything here is
deterministic: same numbers in, same numbers out.

Units: a *tubelet* is 2 consecutive sampled frames (the encoder's temporal patch); a video's
uncompressed LLM grid is (T, H, W) = (tubelets, merged-cell rows, merged-cell columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from encoders.errors import BadRequest

FRAMES_PER_TUBELET = 2


@dataclass(frozen=True)
class Budget:
    """How many visual tokens one request may keep. Exactly one of `keep_ratio`, `tokens_per_frame`.

    keep_ratio: fraction of the video's uncompressed tokens (T*H*W) to keep, in (0, 1].
    tokens_per_frame: tokens per *sampled frame*, > 0. A tubelet holds 2 sampled frames, so it
        stands for 2x this; a video of F sampled frames gets floor(tokens_per_frame * F) tokens
        (F = 2T when the frame count is not known, 2T - 1 when the last tubelet has one frame).
    floor_ratio: every tubelet keeps at least this fraction of its even share of the budget
        (and at least 1 token), so no stretch of the video goes dark. In [0, 1].
    scene_boost: the first tubelet of each scene keeps at least this many times its even share
        (in full when that is more than it has). >= 1.
    scene_change: cosine distance between the mean embeddings of consecutive tubelets above which
        a new scene starts (in addition to tubelet 0 and keyframe tubelets). In (0, 2]; 2 disables.
    """

    keep_ratio: float | None = None
    tokens_per_frame: float | None = None
    floor_ratio: float = 0.25
    scene_boost: float = 2.0
    scene_change: float = 0.5

    def __post_init__(self):
        if (self.keep_ratio is None) == (self.tokens_per_frame is None):
            raise BadRequest(
                "budget: give exactly one of keep_ratio (fraction in (0, 1]) or tokens_per_frame (> 0), "
                f"got keep_ratio={self.keep_ratio!r}, tokens_per_frame={self.tokens_per_frame!r}"
            )
        if self.keep_ratio is not None and not (_is_number(self.keep_ratio) and 0 < self.keep_ratio <= 1):
            raise BadRequest(f"budget: keep_ratio must be a number in (0, 1], got {self.keep_ratio!r}")
        if self.tokens_per_frame is not None and not (_is_number(self.tokens_per_frame) and self.tokens_per_frame > 0):
            raise BadRequest(f"budget: tokens_per_frame must be a number > 0, got {self.tokens_per_frame!r}")
        if not (_is_number(self.floor_ratio) and 0 <= self.floor_ratio <= 1):
            raise BadRequest(f"budget: floor_ratio must be in [0, 1], got {self.floor_ratio!r}")
        if not (_is_number(self.scene_boost) and self.scene_boost >= 1):
            raise BadRequest(f"budget: scene_boost must be >= 1, got {self.scene_boost!r}")
        if not (_is_number(self.scene_change) and 0 < self.scene_change <= 2):
            raise BadRequest(f"budget: scene_change must be in (0, 2], got {self.scene_change!r}")

    def target_tokens(self, grid_thw, num_frames: int | None = None) -> int:
        """Tokens one video may keep: an int in [min(1, T*H*W), T*H*W].

        grid_thw: the video's uncompressed (T, H, W); num_frames: sampled frames when known (the
        decode stage's count), else 2T. Rounds down, but never to 0 for a non-empty video.
        """
        t, h, w = (int(x) for x in grid_thw)
        full = t * h * w
        if full == 0:
            return 0
        if self.keep_ratio is not None:
            k = math.floor(self.keep_ratio * full + 1e-9)
        else:
            frames = FRAMES_PER_TUBELET * t if num_frames is None else int(num_frames)
            if not (FRAMES_PER_TUBELET * t - 1 <= frames <= FRAMES_PER_TUBELET * t):
                raise ValueError(f"target_tokens: {frames} sampled frames do not make {t} tubelets of 2 frames")
            k = math.floor(self.tokens_per_frame * frames + 1e-9)
        return max(1, min(full, k))

    def describe(self) -> str:
        """Short label for accounting and benchmark tables, e.g. 'keep_ratio=0.25'."""
        if self.keep_ratio is not None:
            return f"keep_ratio={self.keep_ratio:g}"
        return f"tokens_per_frame={self.tokens_per_frame:g}"


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def stage_targets(n_full: int, target: int, n_stages: int) -> list[int]:
    """Token counts after each stage of a composed strategy ('codec+tome'): geometric steps.

    Stage i of n keeps n_full * (target / n_full) ** (i / n) tokens, so each stage removes the same
    *fraction* and the last stage lands exactly on `target`. Example: 1000 tokens, target 250,
    two stages -> [500, 250].
    """
    if n_stages < 1:
        raise ValueError(f"stage_targets: n_stages must be >= 1, got {n_stages}")
    if n_full <= 0 or target >= n_full:
        return [min(target, n_full)] * n_stages if n_full > 0 else [0] * n_stages
    ratio = target / n_full
    out = [max(target, math.floor(n_full * ratio ** (i / n_stages) + 1e-9)) for i in range(1, n_stages)]
    return out + [target]


def scene_starts(
    num_tubelets: int,
    keyframe_tubelets: torch.Tensor | None = None,
    tubelet_embeds: torch.Tensor | None = None,
    scene_change: float = 0.5,
) -> torch.Tensor:
    """[T] bool: which tubelets open a scene.

    Tubelet 0 always; tubelet t when `keyframe_tubelets[t]` (an I-frame / keyframe among its frames,
    from the codec); tubelet t > 0 when the cosine distance between `tubelet_embeds[t]` and
    `tubelet_embeds[t - 1]` exceeds `scene_change`. tubelet_embeds: [T, D] mean embedding per
    tubelet (rows of absent tubelets all-zero are skipped: distance counts from the last present one).
    """
    out = torch.zeros(num_tubelets, dtype=torch.bool)
    if num_tubelets == 0:
        return out
    out[0] = True
    if keyframe_tubelets is not None:
        if keyframe_tubelets.shape != (num_tubelets,):
            raise ValueError(f"scene_starts: keyframe_tubelets must be [{num_tubelets}], got {tuple(keyframe_tubelets.shape)}")
        out |= keyframe_tubelets.to(torch.bool).cpu()
    if tubelet_embeds is not None and num_tubelets > 1:
        e = tubelet_embeds.float().cpu()
        norms = e.norm(dim=1)
        present = (norms > 0).nonzero().flatten()
        if present.numel() > 1:
            u = e[present] / norms[present, None]
            dist = 1 - (u[1:] * u[:-1]).sum(1)
            out[present[1:][dist > scene_change]] = True
    return out


def tubelet_floors(capacity: torch.Tensor, total: int, is_scene_start: torch.Tensor, budget: Budget) -> torch.Tensor:
    """[T] int64 minimum tokens per tubelet; sum <= min(total, capacity.sum()), floors <= capacity.

    capacity: [T] int64 tokens present per tubelet (0 = tubelet absent, gets 0).
    is_scene_start: [T] bool. With S = total / (tubelets present) the even share, every present
    tubelet gets max(1, floor(floor_ratio * S)) and scene starts max(that, ceil(scene_boost * S)),
    each capped by its capacity. When those do not fit in `total`, floors shrink toward 1 per
    tubelet (scene starts keep the larger share of what is left); when even 1 per tubelet does not
    fit (total < tubelets), scene starts get 1 first (earliest first), then evenly spaced tubelets.
    """
    capacity = capacity.to(torch.int64).cpu()
    present = (capacity > 0).nonzero().flatten()
    floors = torch.zeros_like(capacity)
    total = min(int(total), int(capacity.sum()))
    if present.numel() == 0 or total <= 0:
        return floors
    even = total / present.numel()
    base = max(1, math.floor(budget.floor_ratio * even + 1e-9))
    scene = max(base, math.ceil(budget.scene_boost * even - 1e-9))
    floors[present] = base
    floors[present[is_scene_start.cpu()[present]]] = scene
    floors = torch.minimum(floors, capacity)
    if int(floors.sum()) <= total:
        return floors
    if total >= present.numel():
        # 1 each, and the rest in proportion to how much above 1 each floor wanted.
        ones = (capacity > 0).to(torch.int64)
        extra = floors - ones
        return ones + allocate(extra.to(torch.float64), extra, total - present.numel())
    # Fewer tokens than tubelets: 1 token each for scene starts first, then evenly spaced tubelets.
    starts = present[is_scene_start.cpu()[present]].tolist()
    chosen = starts[:total]
    others = [int(t) for t in present.tolist() if int(t) not in set(chosen)]
    need = total - len(chosen)
    if need > 0:
        picks = torch.linspace(0, len(others) - 1, need).round().to(torch.int64).unique().tolist()
        chosen += [others[i] for i in picks]
        # linspace rounding can collide when need ~ len(others); fill from the front.
        for t in others:
            if len(chosen) >= total:
                break
            if t not in chosen:
                chosen.append(t)
    floors.zero_()
    floors[torch.tensor(chosen[:total], dtype=torch.int64)] = 1
    return floors


def allocate(
    scores: torch.Tensor, capacity: torch.Tensor, total: int, floors: torch.Tensor | None = None
) -> torch.Tensor:
    """Content-adaptive split of `total` tokens over tubelets: [T] int64 counts.

    scores: [T] float >= 0, how much each tubelet deserves (e.g. motion, novelty); capacity: [T]
    int64 tokens available; floors: [T] int64 guaranteed minimum (from `tubelet_floors`, default 0).
    Each tubelet gets its floor, then the rest goes in proportion to score (water-filling: a tubelet
    that hits its capacity passes its surplus on), leftovers by largest fractional part, ties to the
    earlier tubelet. When every remaining score is 0 the rest is split evenly. Returns counts with
    floors <= counts <= capacity and sum == min(total, capacity.sum()).
    """
    capacity = capacity.to(torch.int64).cpu()
    scores = torch.nan_to_num(scores.to(torch.float64).cpu(), nan=0.0, posinf=0.0).clamp_min(0)
    counts = torch.zeros_like(capacity) if floors is None else torch.minimum(floors.to(torch.int64).cpu(), capacity)
    remaining = min(int(total), int(capacity.sum())) - int(counts.sum())
    if remaining < 0:
        raise ValueError(f"allocate: floors sum to {int(counts.sum())}, more than total {total}")
    while remaining > 0:
        room = capacity - counts
        open_ = room > 0
        w = torch.where(open_, scores, torch.zeros_like(scores))
        if float(w.sum()) <= 0:
            w = open_.to(torch.float64)
        share = remaining * w / w.sum()
        take = torch.minimum(share.floor().to(torch.int64), room)
        if int(take.sum()) == 0:
            # Hand out single tokens by largest fractional share; stable sort -> earlier tubelet on ties.
            frac = torch.where(open_, share - share.floor(), torch.full_like(share, -1.0))
            order = torch.argsort(-frac, stable=True)
            n = min(remaining, int(open_.sum()))
            take = torch.zeros_like(counts)
            take[order[:n]] = 1
        counts += take
        remaining -= int(take.sum())
    return counts

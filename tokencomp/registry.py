"""The strategy registry and `compress`, the one entry point the pipeline calls.

A strategy is a pure function `fn(x: StrategyInput) -> Plan` over the rows of ONE video
(STYLE.md sections 1 and 4). `compress` does everything around it once: checks the request,
splits a pack into videos (videos are never mixed), computes the video's token target and
per-tubelet floors, runs the stages of a composed strategy, applies each plan
(`tokencomp.plan.apply_plan`) and joins the videos back, sorted in original order.

Composition: "codec+tome" runs `codec`, then `tome` on what `codec` kept. The budget is reached in
geometric steps (`budget.stage_targets`): with n stages each stage removes the same fraction, the
last one lands on the request's target. E.g. keep_ratio=0.25 on 1000 tokens: codec keeps 500,
tome merges those to 250. A stage whose input is already within its target is skipped.

Dropped rows: by default (`dropped="absorb"`) each row a stage drops is counted in the weight of
the kept row most like it (`tokencomp.plan.absorb_dropped`), so the weights of a video's rows still
sum to its original token count and the LLM's proportional attention (`pipeline/weighting.py`)
keeps the scene's proportions; `dropped="drop"` is plain pruning.

Scene starts (for the floors) are found once per video, before the first stage: tubelet 0, the
tubelets holding a keyframe / I-frame (from `signals`), and tubelets whose mean embedding moves
more than `budget.scene_change` (cosine distance) from the previous one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from encoders.errors import BadRequest
from encoders.signals import CodecSignals
from encoders.tokens import Members, VisualTokens
from tokencomp.budget import Budget, scene_starts, stage_targets, tubelet_floors
from tokencomp.plan import DROPPED_MODES, Plan, _order_key, absorb_dropped, apply_plan, take_rows, tubelet_capacity


@dataclass(frozen=True)
class StrategyInput:
    """Everything a strategy may look at, for one video and one stage.

    embeds: [N, D] rows of the video, sorted by (t, h, w); pos: [N, 3] int64 (t, h, w) (the
    representative position of merged rows); weight: [N] int64 originals per row; members: the
    merged rows' original positions or None; grid: (T, H, W) uncompressed; target: rows this stage
    may return; floors: [T] int64 rows each tubelet must keep (sum <= target); scene_start: [T]
    bool; keyframe: [T] bool tubelets holding a keyframe (all False without signals);
    budget: the request's budget; signals / query: as given to `compress` (query: [Q, D]).
    """

    embeds: torch.Tensor
    pos: torch.Tensor
    weight: torch.Tensor
    members: Members | None
    grid: tuple[int, int, int]
    target: int
    floors: torch.Tensor
    scene_start: torch.Tensor
    keyframe: torch.Tensor
    budget: Budget
    signals: CodecSignals | None = None
    query: torch.Tensor | None = None

    @property
    def num_rows(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def tubelet(self) -> torch.Tensor:
        """[N] int64 tubelet index of each row (cpu)."""
        return self.pos[:, 0].cpu()


Strategy = Callable[[StrategyInput], Plan]
STRATEGIES: dict[str, Strategy] = {}
# Strategies that ignore the budget on purpose (only `none`).
BUDGET_FREE: set[str] = set()


def register_strategy(name: str, *, budget_free: bool = False):
    """Decorator: `@register_strategy("tome")` adds a strategy under `name`."""

    def deco(fn: Strategy) -> Strategy:
        if name in STRATEGIES and STRATEGIES[name] is not fn:
            raise ValueError(f"register_strategy: {name!r} is already registered by {STRATEGIES[name].__module__}")
        if "+" in name or not name:
            raise ValueError(f"register_strategy: bad name {name!r} ('+' composes strategies)")
        STRATEGIES[name] = fn
        if budget_free:
            BUDGET_FREE.add(name)
        return fn

    return deco


def _load_builtin() -> None:
    import tokencomp.strategies  # noqa: F401 - registers the built-in strategies


def list_strategies() -> list[str]:
    _load_builtin()
    return sorted(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`; BadRequest listing the known names otherwise."""
    _load_builtin()
    if name not in STRATEGIES:
        raise BadRequest(f"strategy: unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))} (compose with '+')")
    return STRATEGIES[name]


def parse_strategy(strategy: str) -> list[str]:
    """'codec+tome' -> ['codec', 'tome'], each name checked."""
    if not isinstance(strategy, str) or not strategy.strip():
        raise BadRequest(f"strategy: expected a name like 'tome' or 'codec+tome', got {strategy!r}")
    names = [s.strip() for s in strategy.split("+")]
    for n in names:
        get_strategy(n)
    return names


def compress(
    tokens: VisualTokens,
    strategy: str,
    budget: Budget,
    signals: CodecSignals | Sequence[CodecSignals | None] | None = None,
    query: torch.Tensor | None = None,
    dropped: str = "absorb",
) -> VisualTokens:
    """Compress every video of `tokens` to at most its budget with `strategy` (names joined by '+').

    tokens: a pack of one or more videos; signals: one `CodecSignals` per video (a single one when
    the pack holds one video; None where unknown); query: [Q, D] embeddings of the question's
    tokens from the LLM's input embedding table (used by `query`). Returns a new `VisualTokens`
    sorted in original order, each row at an original position, with weights and members
    accounted. Deterministic: same inputs, same output.
    """
    names = parse_strategy(strategy)
    if not isinstance(budget, Budget):
        raise BadRequest(f"budget: expected a tokencomp.Budget, got {type(budget).__name__}")
    if not isinstance(tokens, VisualTokens):
        raise TypeError(f"compress: tokens must be VisualTokens, got {type(tokens).__name__}")
    per_video = _signals_per_video(signals, tokens.num_videos)
    query = _check_query(query, tokens.embeds.shape[1])
    parts = []
    for v in range(tokens.num_videos):
        part = _video_part(tokens, v)
        for name, k, keyframe, scenes in _stages(part, names, budget, per_video[v]):
            part = _run_stage(name, part, k, budget, per_video[v], query, keyframe, scenes, dropped)
        parts.append(part)
    return _join(parts, tokens)


def _stages(part: VisualTokens, names: list[str], budget: Budget, signals: CodecSignals | None):
    """Yield (name, target, keyframe [T], scene_start [T]) per stage of one video."""
    grid = tuple(int(x) for x in part.grids[0])
    k = budget.target_tokens(grid, None if signals is None else signals.num_frames)
    keyframe = keyframe_tubelets(signals, grid[0])
    scenes = scene_starts(grid[0], keyframe, _tubelet_means(part, grid[0]), budget.scene_change)
    n_full = grid[0] * grid[1] * grid[2]
    for name, target in zip(names, stage_targets(n_full, k, len(names))):
        yield name, target, keyframe, scenes


def _run_stage(name, part, k, budget, signals, query, keyframe, scenes, dropped="absorb") -> VisualTokens:
    budget_free = name in BUDGET_FREE
    if len(part) == 0 or (len(part) <= k and not budget_free):
        return part
    grid = tuple(int(x) for x in part.grids[0])
    floors = tubelet_floors(tubelet_capacity(part.pos, grid[0]), k, scenes, budget)
    x = StrategyInput(
        embeds=part.embeds, pos=part.pos.cpu(), weight=part.weight.cpu(), members=part.members, grid=grid,
        target=k, floors=floors, scene_start=scenes, keyframe=keyframe, budget=budget, signals=signals, query=query,
    )
    plan = get_strategy(name)(x)
    if plan.dest.shape != (len(part),):
        raise RuntimeError(f"strategy {name!r} returned a plan for {plan.dest.shape[0]} rows, input has {len(part)}")
    if not budget_free and plan.num_outputs() > k:
        raise RuntimeError(f"strategy {name!r} kept {plan.num_outputs()} rows, over its target {k}")
    out = apply_plan(part, plan)
    return absorb_dropped(part, plan, out) if dropped == "absorb" else out


def keyframe_tubelets(signals: CodecSignals | None, num_tubelets: int) -> torch.Tensor:
    """[T] bool: tubelet t (frames 2t, 2t+1) holds a keyframe or I-frame."""
    out = torch.zeros(num_tubelets, dtype=torch.bool)
    if signals is None:
        return out
    frames = signals.num_frames
    if not (2 * num_tubelets - 1 <= frames <= 2 * num_tubelets):
        raise ValueError(f"codec signals cover {frames} sampled frames; a grid of {num_tubelets} tubelets needs "
                         f"{2 * num_tubelets - 1} or {2 * num_tubelets}")
    flags = torch.as_tensor(signals.keyframe, dtype=torch.bool) | torch.tensor(
        [p == "I" for p in signals.picture_types], dtype=torch.bool
    )
    for f in range(frames):
        out[f // 2] |= bool(flags[f])
    return out


def _tubelet_means(part: VisualTokens, num_tubelets: int) -> torch.Tensor:
    """[T, D] float32 weighted mean embedding per tubelet (zeros where absent); rows sorted by t."""
    out = torch.zeros(num_tubelets, part.embeds.shape[1], dtype=torch.float32)
    counts = torch.bincount(part.pos[:, 0].cpu(), minlength=num_tubelets)[:num_tubelets]
    w = part.weight.to(device=part.embeds.device, dtype=torch.float32)
    # Contiguous slices per tubelet: a weighted sum is one small matvec each (index_add_ is slow on CPU).
    for t, (e, wt) in enumerate(zip(torch.split(part.embeds, counts.tolist()), torch.split(w, counts.tolist()))):
        if wt.numel():
            out[t] = ((wt @ e.float()) / wt.sum()).cpu()
    return out


def _signals_per_video(signals, num_videos: int) -> list[CodecSignals | None]:
    if signals is None:
        return [None] * num_videos
    if isinstance(signals, CodecSignals):
        signals = [signals]
    signals = list(signals)
    if len(signals) != num_videos or any(s is not None and not isinstance(s, CodecSignals) for s in signals):
        raise BadRequest(f"signals: expected one CodecSignals (or None) per video, {num_videos} videos, got {len(signals)} items")
    return signals


def _check_query(query, width: int) -> torch.Tensor | None:
    if query is None:
        return None
    if not isinstance(query, torch.Tensor) or query.ndim != 2 or query.shape[1] != width:
        shape = tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__
        raise BadRequest(f"query: expected the question's token embeddings [Q, {width}] (the LLM width), got {shape}")
    return query


def _video_part(tokens: VisualTokens, v: int) -> VisualTokens:
    """Rows of video v, sorted, as a one-video pack (video_id 0)."""
    if tokens.num_videos == 1 and bool((tokens.sort_index().cpu() == torch.arange(len(tokens))).all()):
        return replace(tokens, video_id=torch.zeros_like(tokens.video_id))  # already one sorted video: no copy
    rows = (tokens.video_id.cpu() == v).nonzero().flatten()
    part = take_rows(tokens, rows)
    part = replace(part, video_id=torch.zeros_like(part.video_id), grids=tokens.grids[v : v + 1].clone())
    return take_rows(part, torch.argsort(_order_key(part), stable=True))


def _join(parts: list[VisualTokens], like: VisualTokens) -> VisualTokens:
    """Concatenate per-video parts back into one pack (video ids restored, members joined)."""
    if not parts:
        return like
    if len(parts) == 1:
        return replace(parts[0], video_id=torch.zeros_like(parts[0].video_id), grids=like.grids)
    members = None
    if any(p.members is not None for p in parts):
        pos, lens = [], []
        for p in parts:
            if p.members is None:
                pos.append(p.pos.cpu())
                lens.append(torch.ones(len(p), dtype=torch.int64))
            else:
                pos.append(p.members.pos)
                lens.append(p.members.offsets[1:] - p.members.offsets[:-1])
        offsets = torch.zeros(sum(len(p) for p in parts) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(torch.cat(lens), 0)
        members = Members(pos=torch.cat(pos), offsets=offsets)
    return VisualTokens(
        embeds=torch.cat([p.embeds for p in parts]),
        pos=torch.cat([p.pos for p in parts]),
        time_s=torch.cat([p.time_s for p in parts]),
        weight=torch.cat([p.weight for p in parts]),
        video_id=torch.cat([torch.full_like(p.video_id, v) for v, p in enumerate(parts)]),
        grids=like.grids,
        members=members,
    )

"""Property tests for tokencomp: every strategy, random small packs (hypothesis).

Each example builds a pack of 1-3 videos with random grids, random (partly duplicated) embeddings
and, optionally, rows already dropped, then checks what every strategy must guarantee: budget,
positions, order, weights, members, floors, determinism, per-video independence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import BadRequest
from encoders.signals import CodecSignals
from encoders.tokens import VisualTokens
from tokencomp.budget import Budget, allocate, scene_starts, stage_targets, tubelet_floors
from tokencomp.plan import Plan, apply_plan, select_top, tubelet_capacity
from tokencomp.registry import BUDGET_FREE, compress, get_strategy, keyframe_tubelets, list_strategies

# derandomize: the same examples every run, so CI never flakes; raise max_examples locally to explore.
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
ALL = list_strategies()
MERGING = {"tome"}  # keeps every original (uniform/uniform-t drop whole tubelets when the budget is short)
NO_FLOOR = {"none", "uniform-t"}  # none keeps all; uniform-t skips tubelets by design
COMPOSED = ["codec+tome", "temporal+divprune", "uniform+query"]


@st.composite
def packs(draw, max_videos=3, min_side=1):
    """(VisualTokens, [CodecSignals], query [Q, D]) with 1..max_videos videos."""
    n_videos = draw(st.integers(1, max_videos))
    d = draw(st.sampled_from([3, 8]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    parts, signals = [], []
    for _ in range(n_videos):
        t, h, w = (draw(st.integers(min_side, 4 + min_side)) for _ in range(3))
        # A few distinct embeddings repeated: exact duplicates, like a static background.
        palette = torch.randn(draw(st.integers(1, 6)), d, generator=gen)
        emb = palette[torch.randint(0, palette.shape[0], (t * h * w,), generator=gen)]
        emb = emb + draw(st.sampled_from([0.0, 0.1])) * torch.randn(t * h * w, d, generator=gen)
        if draw(st.booleans()) and t > 1:  # a static video: every tubelet repeats the first exactly
            emb = emb.view(t, h * w, d)[:1].expand(t, h * w, d).reshape(-1, d).clone()
        part = VisualTokens.full_grid(emb, (t, h, w), torch.arange(t, dtype=torch.float32) * 0.5)
        keep_frac = draw(st.sampled_from([1.0, 1.0, 0.5, 0.0] if min_side == 1 else [1.0, 1.0, 0.7]))
        if keep_frac < 1:  # an earlier stage (or pre-encoder selection) already dropped rows
            part = part.select(torch.rand(len(part), generator=gen) < keep_frac)
        parts.append(part)
        frames = 2 * t - draw(st.integers(0, 1))
        cell = draw(st.sampled_from([14, 28]))
        hc, wc = h * 28 // cell, w * 28 // cell
        key = rng.random(frames) < 0.2
        key[0] = True
        signals.append(CodecSignals(
            picture_types=tuple("I" if k else "P" for k in key),
            motion=rng.random((frames, hc, wc)).astype(np.float32) * (rng.random((frames, hc, wc)) < 0.3),
            keyframe=key, cell_px=cell, source="mv", codec="h264",
        ))
    query = torch.randn(draw(st.integers(1, 3)), d, generator=gen)
    return VisualTokens.cat(parts), signals, query


budgets = st.one_of(
    st.builds(lambda r: Budget(keep_ratio=r), st.sampled_from([0.05, 0.2, 0.25, 0.5, 0.9, 1.0])),
    st.builds(lambda f: Budget(tokens_per_frame=f), st.sampled_from([0.3, 1.0, 2.0, 5.0])),
)


def _keys(pos: torch.Tensor) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in p) for p in pos]


def check_output(inp: VisualTokens, out: VisualTokens, strategy: str, budget: Budget, signals, dropped: str = "drop"):
    """Everything a compressed pack must satisfy, per video (weights as `dropped` says)."""
    names = strategy.split("+")
    assert torch.equal(out.grids, inp.grids)
    # Order preserved (video, t, h, w), no duplicate positions.
    assert torch.equal(out.sort_index(), torch.arange(len(out))), "output not sorted in original order"
    for v, (vin, vout) in enumerate(zip(inp.split(), out.split())):
        grid = tuple(int(x) for x in inp.grids[v])
        k = budget.target_tokens(grid, signals[v].num_frames)
        if not set(names) <= BUDGET_FREE:
            assert len(vout) <= k, f"video {v}: {len(vout)} rows > budget {k}"
        assert len(set(_keys(vout.pos))) == len(vout)
        # Every original position is accounted for at most once, and only input positions appear.
        in_orig = [p for g in vin.member_groups() for p in _keys(g)]
        out_orig = [p for g in vout.member_groups() for p in _keys(g)]
        assert len(set(out_orig)) == len(out_orig), "an original position is in two output rows"
        assert set(out_orig) <= set(in_orig), "output holds positions that were not in the input"
        # Representative = earliest member, and the row's time is its tubelet's time.
        for row, g in enumerate(vout.member_groups()):
            assert _keys(vout.pos[row : row + 1])[0] == min(_keys(g))
        in_time = dict(zip(_keys(vin.pos), vin.time_s.tolist()))
        for p, ts in zip(_keys(vout.pos), vout.time_s.tolist()):
            assert in_time[p] == ts, f"row at {p}: time {ts}, input had {in_time.get(p)}"
        sizes = torch.tensor([g.shape[0] for g in vout.member_groups()], dtype=torch.int64)
        if dropped == "absorb":
            # Every input token is counted somewhere: the total is kept, each row at least its members.
            assert len(vout) == 0 or int(vout.weight.sum()) == int(vin.weight.sum()), "absorb lost weight"
            assert bool((vout.weight >= sizes).all()) or vin.members is not None
            continue  # embeddings of later stages are averaged with the absorbed weights
        # Weights: merging keeps the total; dropping keeps each kept row's weight.
        assert int(vout.weight.sum()) <= int(vin.weight.sum())
        assert torch.equal(vout.weight, sizes) or vin.members is not None
        present = int(torch.unique(vin.pos[:, 0]).numel())
        if set(names) <= MERGING | {"none"} or (names == ["uniform"] and k >= present):
            assert int(vout.weight.sum()) == int(vin.weight.sum()), "merging lost weight"
        # Embeddings: weight-weighted mean of the absorbed input rows.
        by_pos = {p: i for i, p in enumerate(_keys(vin.pos))}
        for row, g in enumerate(vout.member_groups()):
            src = [by_pos[p] for p in _keys(g) if p in by_pos]
            w = vin.weight[src].float()[:, None]
            want = (vin.embeds[src] * w).sum(0) / w.sum()
            assert torch.allclose(vout.embeds[row], want, atol=1e-5), f"row {row}: not the weighted mean"


@SETTINGS
@given(data=packs(), budget=budgets, which=st.sampled_from(ALL + COMPOSED))
def test_every_strategy_contract(data, budget, which):
    tokens, signals, query = data
    out = compress(tokens, which, budget, signals=signals, query=query, dropped="drop")
    check_output(tokens, out, which, budget, signals)
    # Deterministic: same input, same output.
    again = compress(tokens, which, budget, signals=signals, query=query, dropped="drop")
    assert torch.equal(out.pos, again.pos) and torch.equal(out.embeds, again.embeds)
    assert torch.equal(out.weight, again.weight)


@SETTINGS
@given(data=packs(), budget=budgets, which=st.sampled_from(ALL + COMPOSED))
def test_absorb_contract(data, budget, which):
    """dropped="absorb": the same structure, every input token counted once in the weights; for a
    single stage exactly the rows, positions, embeddings and members of plain dropping."""
    tokens, signals, query = data
    out = compress(tokens, which, budget, signals=signals, query=query, dropped="absorb")
    check_output(tokens, out, which, budget, signals, dropped="absorb")
    if "+" not in which:
        plain = compress(tokens, which, budget, signals=signals, query=query, dropped="drop")
        assert torch.equal(out.pos, plain.pos) and torch.equal(out.embeds, plain.embeds)
        assert all(torch.equal(a, b) for a, b in zip(out.member_groups(), plain.member_groups()))
        assert bool((out.weight >= plain.weight).all())
    again = compress(tokens, which, budget, signals=signals, query=query, dropped="absorb")
    assert torch.equal(out.weight, again.weight) and torch.equal(out.pos, again.pos)


@SETTINGS
@given(data=packs(), budget=budgets, which=st.sampled_from([s for s in ALL if s != "none"] + COMPOSED))
def test_videos_never_mix(data, budget, which):
    """Compressing a pack equals compressing each video alone: nothing crosses video lines."""
    tokens, signals, query = data
    out = compress(tokens, which, budget, signals=signals, query=query).split()
    for v, part in enumerate(tokens.split()):
        alone = compress(part, which, budget, signals=[signals[v]], query=query)
        assert torch.equal(out[v].pos, alone.pos), f"video {v} differs when packed"
        assert torch.allclose(out[v].embeds, alone.embeds)
        assert torch.equal(out[v].weight, alone.weight)


@SETTINGS
@given(data=packs(max_videos=1, min_side=2), budget=budgets, which=st.sampled_from([s for s in ALL if s not in NO_FLOOR]))
def test_budget_floor_holds(data, budget, which):
    """Every tubelet present keeps at least its floor (tubelet 0 and keyframes the higher one)."""
    tokens, signals, query = data
    if len(tokens) == 0:
        return
    grid = tuple(int(x) for x in tokens.grids[0])
    k = budget.target_tokens(grid, signals[0].num_frames)
    if len(tokens) <= k:
        return  # nothing to compress: every row stays
    out = compress(tokens, which, budget, signals=signals, query=query)
    means = torch.zeros(grid[0], tokens.embeds.shape[1]).index_add_(0, tokens.pos[:, 0], tokens.embeds)
    means /= torch.bincount(tokens.pos[:, 0], minlength=grid[0]).clamp_min(1)[:, None]
    scenes = scene_starts(grid[0], keyframe_tubelets(signals[0], grid[0]), means, budget.scene_change)
    cap = tubelet_capacity(tokens.pos, grid[0])
    floors = tubelet_floors(cap, k, scenes, budget)
    got = tubelet_capacity(out.pos, grid[0])
    assert bool((got >= floors).all()), f"{which}: kept {got.tolist()} per tubelet, floors {floors.tolist()}"
    if k >= int((cap > 0).sum()):
        assert bool((got[cap > 0] >= 1).all()), "a tubelet went dark although the budget allowed one token each"


@pytest.mark.parametrize("which", ALL + COMPOSED)
def test_empty_and_single_token(which):
    d = 4
    sig = CodecSignals(("I", "P"), np.ones((2, 1, 1), np.float32), np.array([True, False]), 28, "mv", "h264")
    one = VisualTokens.full_grid(torch.randn(1, d), (1, 1, 1), torch.zeros(1))
    empty = one.select(torch.zeros(1, dtype=torch.bool))
    for tokens in (one, empty):
        out = compress(tokens, which, Budget(keep_ratio=0.1), signals=sig, query=torch.randn(2, d))
        assert len(out) == len(tokens)
        assert torch.equal(out.pos, tokens.pos)


@SETTINGS
@given(
    scores=st.lists(st.floats(0, 10), min_size=1, max_size=8),
    caps=st.lists(st.integers(0, 20), min_size=8, max_size=8),
    total=st.integers(0, 100),
    scene=st.lists(st.booleans(), min_size=8, max_size=8),
    floor_ratio=st.sampled_from([0.0, 0.25, 1.0]),
)
def test_floors_and_allocate(scores, caps, total, scene, floor_ratio):
    t = len(scores)
    cap = torch.tensor(caps[:t], dtype=torch.int64)
    is_scene = torch.tensor(scene[:t])
    floors = tubelet_floors(cap, total, is_scene, Budget(keep_ratio=0.5, floor_ratio=floor_ratio))
    fit = min(total, int(cap.sum()))
    assert int(floors.sum()) <= fit and bool((floors <= cap).all())
    present = int((cap > 0).sum())
    if fit >= present:
        assert bool((floors[cap > 0] >= 1).all()), "floor below 1 although every tubelet fits"
    else:
        assert int(floors.sum()) == fit
    counts = allocate(torch.tensor(scores, dtype=torch.float64), cap, total, floors)
    assert int(counts.sum()) == fit
    assert bool((counts >= floors).all()) and bool((counts <= cap).all())
    assert torch.equal(counts, allocate(torch.tensor(scores, dtype=torch.float64), cap, total, floors))


def test_allocate_follows_scores():
    cap = torch.full((4,), 100, dtype=torch.int64)
    counts = allocate(torch.tensor([0.0, 3.0, 1.0, 0.0]), cap, 40, torch.tensor([2, 2, 2, 2]))
    assert counts.tolist() == [2, 2 + 24, 2 + 8, 2], counts.tolist()
    # A tubelet at capacity passes its surplus on (water-filling).
    counts = allocate(torch.tensor([10.0, 1.0]), torch.tensor([5, 100]), 50)
    assert counts.tolist() == [5, 45]


def test_select_top_floors_then_global():
    scores = torch.tensor([0.0, 0.1, 0.2, 5.0, 6.0, 7.0])
    tub = torch.tensor([0, 0, 0, 1, 1, 1])
    keep = select_top(scores, tub, torch.tensor([1, 0]), 3)
    assert keep.tolist() == [2, 4, 5]
    # Ties spread round-robin over tubelets instead of filling the first tubelet.
    keep = select_top(torch.zeros(6), tub, torch.tensor([0, 0]), 2)
    assert keep.tolist() == [0, 3]


def test_budget_rejects_bad_values():
    for kwargs in (
        {}, {"keep_ratio": 0.5, "tokens_per_frame": 2}, {"keep_ratio": 0}, {"keep_ratio": 1.5},
        {"tokens_per_frame": -1}, {"keep_ratio": float("nan")}, {"keep_ratio": True}, {"keep_ratio": "0.5"},
        {"keep_ratio": 0.5, "floor_ratio": 2}, {"keep_ratio": 0.5, "scene_boost": 0.5},
    ):
        with pytest.raises(BadRequest, match="budget"):
            Budget(**kwargs)


def test_tokens_per_frame_counts_sampled_frames():
    b = Budget(tokens_per_frame=2.5)
    assert b.target_tokens((4, 10, 10)) == 20  # 8 frames x 2.5
    assert b.target_tokens((4, 10, 10), num_frames=7) == 17  # last tubelet has one frame
    assert Budget(tokens_per_frame=1000).target_tokens((2, 2, 2)) == 8  # capped at the full grid
    assert Budget(keep_ratio=0.01).target_tokens((1, 2, 2)) == 1  # never 0 for a non-empty video
    assert Budget(keep_ratio=0.25).target_tokens((2, 4, 4)) == 8
    assert stage_targets(1000, 250, 2) == [500, 250]
    assert stage_targets(100, 100, 3) == [100, 100, 100]


def test_registry_errors_and_names():
    with pytest.raises(BadRequest, match="known: .*tome"):
        get_strategy("tomee")
    tokens = VisualTokens.full_grid(torch.randn(8, 4), (2, 2, 2), torch.zeros(2))
    for bad in ("codec+", "", "tome+nope"):
        with pytest.raises(BadRequest, match="strateg"):
            compress(tokens, bad, Budget(keep_ratio=0.5))
    with pytest.raises(BadRequest, match="codec signals"):
        compress(tokens, "codec", Budget(keep_ratio=0.5))
    with pytest.raises(BadRequest, match="query"):
        compress(tokens, "query", Budget(keep_ratio=0.5))
    with pytest.raises(BadRequest, match=r"query: .*\[Q, 4\]"):
        compress(tokens, "query", Budget(keep_ratio=0.5), query=torch.randn(3, 5))
    with pytest.raises(BadRequest, match="budget"):
        compress(tokens, "tome", 0.5)
    with pytest.raises(BadRequest, match="signals"):
        compress(tokens, "codec", Budget(keep_ratio=0.5), signals=[None, None])


def test_apply_plan_rejects_cross_video_merge():
    a = VisualTokens.full_grid(torch.randn(2, 4), (1, 1, 2), torch.zeros(1))
    pack = VisualTokens.cat([a, a])
    with pytest.raises(ValueError, match="different videos"):
        apply_plan(pack, Plan(torch.tensor([0, 1, 0, 2])))


def test_scene_start_from_embedding_change_and_keyframes():
    e = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [0, 1.0]])
    assert scene_starts(4, None, e, 0.5).tolist() == [True, False, True, False]
    assert scene_starts(4, torch.tensor([False, True, False, False]), None).tolist() == [True, True, False, False]

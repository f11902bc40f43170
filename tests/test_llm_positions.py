"""pipeline/positions.py against transformers' own `Qwen2_5_VLModel.get_rope_index`.

The reference is the installed transformers, run on the *full* (uncompressed) token sequence; our
positions for a compressed stream must be exactly its columns at the kept tokens, and in "centroid"
mode a merged row's position is the mean of those columns over the row's members.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.errors import BadRequest
from encoders.tokens import Members, grid_positions
from pipeline.positions import (
    POSITION_MODES,
    PromptPositions,
    VideoSpan,
    generation_position_ids,
    prompt_position_ids,
    uncompressed_max_offset,
)

MERGE = 2
TEMPORAL_PATCH = 2


@pytest.fixture(scope="module")
def hf_model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    from tests.fixtures.tiny_qwen import TEXT_DEFAULTS, VISION_DEFAULTS

    config = Qwen2_5_VLConfig(
        vision_config=dict(VISION_DEFAULTS),
        text_config={**TEXT_DEFAULTS, "vocab_size": 64},
        image_token_id=60,
        video_token_id=61,
        vision_start_token_id=62,
        vision_end_token_id=63,
    )
    return Qwen2_5_VLModel(config).eval()


def hf_positions(model, before: int, grid: tuple[int, int, int], after: int, second_per_grid: float):
    """transformers' [3, L] positions and rope delta for text(before) + video(grid) + text(after)."""
    t, h, w = grid
    n = t * h * w
    cfg = model.config
    ids = torch.cat(
        [
            torch.full((before,), 5),
            torch.full((n,), cfg.video_token_id),
            torch.full((after,), 7),
        ]
    ).view(1, -1)
    types = (ids == cfg.video_token_id).to(torch.int32) * 2
    pos, delta = model.get_rope_index(
        ids,
        mm_token_type_ids=types,
        video_grid_thw=torch.tensor([[t, h * MERGE, w * MERGE]]),
        # The processor hands a float32 tensor (a list of python floats through BatchFeature).
        second_per_grid_ts=torch.tensor([second_per_grid]),
    )
    return pos[:, 0], int(delta[0])


def ours(before, grid, after, second_per_grid, keep=None, mode="keep", text_after="spatial", tps=2):
    pos = grid_positions(*grid)
    if keep is not None:
        pos = pos[keep]
    span = VideoSpan(pos=pos, grid=grid, second_per_grid=second_per_grid)
    return prompt_position_ids([before, span, after], tokens_per_second=tps, mode=mode, text_after=text_after)


# (grid, sampled fps): fps 3 and 7 give non-integer intervals whose float32 floor is easy to get wrong.
CASES = [
    ((4, 2, 3), 4.0),
    ((3, 5, 2), 2.0),
    ((6, 2, 2), 3.0),
    ((5, 3, 4), 7.0),
    ((8, 2, 3), 1.0),  # temporal span far beyond max(H, W)
    ((1, 4, 4), 30.0),
]


@pytest.mark.parametrize("grid,fps", CASES)
def test_uncompressed_positions_equal_get_rope_index(hf_model, grid, fps):
    spg = TEMPORAL_PATCH / fps
    ref, delta = hf_positions(hf_model, 9, grid, 6, spg)
    got = ours(9, grid, 6, spg)
    assert torch.equal(got.position_ids, ref), f"ours\n{got.position_ids}\ntransformers\n{ref}"
    assert got.rope_delta == delta, f"rope delta ours {got.rope_delta} vs transformers {delta}"


@pytest.mark.parametrize("grid,fps", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_kept_positions_are_full_sequence_positions_restricted(hf_model, grid, fps, seed):
    spg = TEMPORAL_PATCH / fps
    before, after = 4, 5
    ref, delta = hf_positions(hf_model, before, grid, after, spg)
    n = grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(n, generator=g)[: max(1, n // 3)].sort().values
    got = ours(before, grid, after, spg, keep=keep)
    cols = torch.cat([torch.arange(before), before + keep, torch.arange(before + n, before + n + after)])
    assert torch.equal(got.position_ids, ref[:, cols]), f"ours\n{got.position_ids}\nrestricted ref\n{ref[:, cols]}"
    # Generation continues where it would uncompressed: the same absolute position, not the same delta.
    assert got.next_position == n + before + after + delta


def test_generation_positions_continue_from_uncompressed_max():
    grid, spg = (8, 2, 3), 2.0  # interval 4: temporal reaches 28, far past the spatial extent
    full = ours(3, grid, 0, spg)
    pruned = ours(3, grid, 0, spg, keep=torch.tensor([0, 1, 2]))  # only the first tubelet kept
    assert full.next_position == pruned.next_position == 3 + 28 + 1
    gen = generation_position_ids(pruned.next_position, 4)
    assert gen.shape == (3, 4) and torch.equal(gen[0], torch.arange(32, 36)) and torch.equal(gen[0], gen[2])


def test_max_rule_starts_text_after_the_largest_video_position():
    grid, spg = (8, 2, 3), 1.0  # interval 2: temporal max 14 > max(H, W) = 3
    p = ours(2, grid, 3, spg, text_after="max")
    text_after = p.position_ids[:, -3:]
    assert int(text_after[0, 0]) == 2 + uncompressed_max_offset(grid, spg, 2) + 1 == 2 + 15
    s = ours(2, grid, 3, spg, text_after="spatial")
    assert int(s.position_ids[0, -3]) == 2 + 3
    # Where the temporal span stays within the spatial extent the two rules agree.
    a, b = ours(2, (2, 4, 4), 3, 1.0, text_after="max"), ours(2, (2, 4, 4), 3, 1.0, text_after="spatial")
    assert torch.equal(a.position_ids, b.position_ids) and a.next_position == b.next_position


def test_compact_renumbers_kept_tokens_densely():
    grid, spg = (4, 2, 3), 0.5
    keep = torch.tensor([0, 5, 7, 20])
    c = ours(3, grid, 2, spg, keep=keep, mode="compact")
    k = ours(3, grid, 2, spg, keep=keep, mode="keep")
    assert torch.equal(c.position_ids[0], torch.arange(3 + 4 + 2))
    assert torch.equal(c.position_ids[0], c.position_ids[1]) and torch.equal(c.position_ids[1], c.position_ids[2])
    assert c.next_position == 9
    assert not torch.equal(c.position_ids, k.position_ids)


def test_bad_arguments_raise():
    pos = grid_positions(2, 2, 2)
    with pytest.raises(ValueError, match="outside the grid"):
        VideoSpan(pos=pos, grid=(1, 2, 2), second_per_grid=1.0)
    with pytest.raises(ValueError, match="position mode"):
        prompt_position_ids([1, VideoSpan(pos=pos, grid=(2, 2, 2), second_per_grid=1.0)], 2, mode="dense")
    with pytest.raises(ValueError, match="int64"):
        VideoSpan(pos=pos.to(torch.int32), grid=(2, 2, 2), second_per_grid=1.0)
    assert isinstance(prompt_position_ids([3], 2), PromptPositions)


# ---- centroid mode ----------------------------------------------------------------------------


def random_merges(grid: tuple[int, int, int], seed: int, groups: int, drop: float = 0.3):
    """A random merged stream on `grid`: (pos [N, 3] int64 representatives, Members).

    Some cells are dropped, the rest fall into `groups` random clusters (any shape, across tubelets
    too); a cluster's representative is its earliest member, rows sorted by it, as apply_plan does.
    """
    g = torch.Generator().manual_seed(seed)
    full = grid_positions(*grid)
    n = full.shape[0]
    label = torch.randint(0, groups, (n,), generator=g)
    label[torch.rand(n, generator=g) < drop] = -1
    rows = [(label == k).nonzero().flatten() for k in range(groups)]
    rows = sorted((r for r in rows if r.numel()), key=lambda r: int(r.min()))
    # Members in a shuffled order: the mean must not depend on it.
    member_lists = [full[r[torch.randperm(r.numel(), generator=g)]] for r in rows]
    pos = torch.stack([full[int(r.min())] for r in rows]) if rows else torch.zeros(0, 3, dtype=torch.int64)
    return pos, Members.from_lists(member_lists)


def expected_centroids(full_cols: torch.Tensor, grid, members: Members, start_col: int) -> torch.Tensor:
    """[3, N] float32 written apart from the code under test: per row the exact rational mean of
    the full-sequence position columns of its members (raster index into `full_cols`), rounded once."""
    _, h, w = grid
    out = []
    for i in range(members.offsets.numel() - 1):
        cols = [start_col + (int(t) * h + int(y)) * w + int(x) for t, y, x in members.row(i).tolist()]
        out.append([float(Fraction(sum(int(full_cols[r, c]) for c in cols), len(cols))) for r in range(3)])
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 3).T.to(torch.float32)


@pytest.mark.parametrize("grid,fps", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centroid_is_the_mean_of_members_full_sequence_positions(hf_model, grid, fps, seed):
    spg = TEMPORAL_PATCH / fps
    before, after = 4, 5
    ref, delta = hf_positions(hf_model, before, grid, after, spg)
    n_full = grid[0] * grid[1] * grid[2]
    pos, members = random_merges(grid, seed, groups=max(2, n_full // 4))
    span = VideoSpan(pos=pos, grid=grid, second_per_grid=spg, members=members)
    got = prompt_position_ids([before, span, after], tokens_per_second=2, mode="centroid")
    keep = prompt_position_ids([before, span, after], tokens_per_second=2, mode="keep")
    n = pos.shape[0]
    assert got.position_ids.dtype == torch.float32 and got.position_ids.shape == (3, before + n + after)
    want = expected_centroids(ref, grid, members, before)
    video = got.position_ids[:, before : before + n]
    assert torch.equal(video, want), f"centroid\n{video}\nexpected\n{want}"
    # Text on both sides and generation follow the keep rules (uncompressed grid).
    text = torch.cat([torch.arange(before), torch.arange(before + n, before + n + after)])
    assert torch.equal(got.position_ids[:, text], keep.position_ids[:, text].float())
    assert got.next_position == keep.next_position == before + n_full + after + delta
    # Rows that absorbed one cell sit exactly at their keep position; merged rows at least once not.
    single = (members.offsets[1:] - members.offsets[:-1]) == 1
    assert torch.equal(video[:, single], keep.position_ids[:, before : before + n][:, single].float())
    assert not torch.equal(video, keep.position_ids[:, before : before + n].float()), "no merge moved a position"


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(1, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    fps=st.sampled_from([1.0, 2.0, 3.0, 7.0, 30.0]),
    seed=st.integers(0, 2**31 - 1),
    groups=st.integers(1, 40),
    before=st.integers(0, 6),
)
def test_centroid_property_mean_of_keep_positions(t, h, w, fps, seed, groups, before):
    """Any merge pattern: each row is the mean of the keep positions its members have on the full
    grid (keep on the full grid is checked against transformers above)."""
    grid, spg = (t, h, w), TEMPORAL_PATCH / fps
    full = ours(before, grid, 3, spg)  # keep positions of every cell, uncompressed
    pos, members = random_merges(grid, seed, groups)
    span = VideoSpan(pos=pos, grid=grid, second_per_grid=spg, members=members)
    got = prompt_position_ids([before, span, 3], tokens_per_second=2, mode="centroid")
    n = pos.shape[0]
    assert got.position_ids.dtype == torch.float32
    assert torch.equal(got.position_ids[:, before : before + n], expected_centroids(full.position_ids, grid, members, before))
    assert got.next_position == full.next_position


@pytest.mark.parametrize("grid,fps", CASES)
@pytest.mark.parametrize("kept", ["all", "pruned"])
@pytest.mark.parametrize("with_members", [False, True])
def test_centroid_equals_keep_when_nothing_merged(grid, fps, kept, with_members):
    spg = TEMPORAL_PATCH / fps
    pos = grid_positions(*grid)
    if kept == "pruned":
        pos = pos[torch.arange(0, pos.shape[0], 3)]
    members = Members.from_lists([p[None] for p in pos]) if with_members else None
    span = VideoSpan(pos=pos, grid=grid, second_per_grid=spg, members=members)
    keep = prompt_position_ids([7, span, 4], 2, mode="keep")
    cen = prompt_position_ids([7, span, 4], 2, mode="centroid")
    assert keep.position_ids.dtype == torch.int64 and cen.position_ids.dtype == torch.float32
    assert torch.equal(cen.position_ids, keep.position_ids.float()) and torch.equal(cen.position_ids.long(), keep.position_ids)
    assert cen.next_position == keep.next_position


def test_centroid_of_a_merge_across_tubelets_is_fractional():
    # interval = (2 / 3) * 2 = 4/3: tubelets 0 and 2 sit at 0 and floor(8/3) = 2.
    grid = (3, 2, 2)
    members = Members.from_lists([torch.tensor([[0, 0, 0], [2, 1, 1], [0, 0, 1]]), torch.tensor([[1, 1, 0]])])
    span = VideoSpan(pos=torch.tensor([[0, 0, 0], [1, 1, 0]]), grid=grid, second_per_grid=2 / 3, members=members)
    p = prompt_position_ids([2, span], 2, mode="centroid")
    want = torch.tensor([[2 + 2 / 3, 2 + 1], [2 + 1 / 3, 2 + 1], [2 + 2 / 3, 2 + 0]], dtype=torch.float64).to(torch.float32)
    assert torch.equal(p.position_ids[:, 2:], want), p.position_ids
    assert p.position_ids.dtype == torch.float32


def test_members_that_do_not_fit_the_span_raise():
    pos = grid_positions(1, 2, 2)
    with pytest.raises(ValueError, match="members has 3 rows"):
        VideoSpan(pos=pos, grid=(1, 2, 2), second_per_grid=1.0, members=Members.from_lists([p[None] for p in pos[:3]]))
    bad = Members.from_lists([p[None] for p in pos[:3]] + [torch.tensor([[0, 5, 0]])])
    with pytest.raises(ValueError, match="outside the grid"):
        VideoSpan(pos=pos, grid=(1, 2, 2), second_per_grid=1.0, members=bad)


def test_bad_position_mode_is_one_line_listing_the_modes():
    from pipeline.options import POSITION_MODES as OPTION_MODES
    from pipeline.options import AskOptions

    assert OPTION_MODES == POSITION_MODES == ("keep", "compact", "centroid")
    with pytest.raises(BadRequest) as err:
        AskOptions(position_mode="middle")
    msg = str(err.value)
    assert "\n" not in msg and "position_mode" in msg and "'middle'" in msg
    assert all(repr(m) in msg for m in POSITION_MODES), msg
    assert AskOptions(position_mode="centroid").position_mode == "centroid"
    # The CLI offers the same names.
    import argparse

    from pipeline.cmd_ask import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["v.mp4", "q", "--position-mode", "centroid"]).position_mode == "centroid"
    with pytest.raises(ValueError, match="centroid"):
        prompt_position_ids([1], 2, mode="middle")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int32])
def test_prompt_positions_refuse_low_precision_ids(dtype):
    # Rule 2: bf16 cannot tell 1001 from 1002.
    with pytest.raises(ValueError, match="int64 or float32"):
        PromptPositions(position_ids=torch.zeros(3, 2, dtype=dtype), next_position=2)

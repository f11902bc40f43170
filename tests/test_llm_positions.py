"""pipeline/positions.py against transformers' own `Qwen2_5_VLModel.get_rope_index`.

The reference is the installed transformers, run on the *full* (uncompressed) token sequence; our
positions for a compressed stream must be exactly its columns at the kept tokens.
"""

from __future__ import annotations

import pytest
import torch

from encoders.tokens import grid_positions
from pipeline.positions import (
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

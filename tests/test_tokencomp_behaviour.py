"""Behaviour of the strategies on real generated videos.

A static textured background with one textured square moving 8 px per frame is written as H.264
(pipeline/videogen.py), decoded with codec signals (pipeline/decode.py: motion vectors on 28 px
cells) and encoded by vidsieve's st3d encoder (tiny config, random weights: static cells give
near-identical embeddings from tubelet to tubelet, the square's cells do not). Then:
`codec` and `temporal` keep the square's cells and drop the background; `uniform` does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.config import get_preset
from encoders.vit import VisionEncoder
from pipeline.decode import sample_frames
from pipeline.videogen import moving_square_video, write_video
from tokencomp.budget import Budget
from tokencomp.registry import compress
from tokencomp.strategies.codec import motion_grid, select_cells

CELL = 28  # merged LLM cell in pixels
W_PX, H_PX, FRAMES = 224, 168, 16  # 8 x 6 cells, 8 tubelets
BUDGET = Budget(keep_ratio=0.15)  # 57 of 384 tokens: the scene floor, the square's ~7 changed cells per tubelet


def patchify(frames: np.ndarray) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[F, H, W, 3] uint8 -> ([P, 3*2*14*14] HF-layout patches scaled to [-1, 1], patch grid (T, H/14, W/14))."""
    if frames.shape[0] % 2:
        frames = np.concatenate([frames, frames[-1:]])
    x = torch.from_numpy(frames).float() / 127.5 - 1
    t, hc, wc = x.shape[0] // 2, x.shape[1] // CELL, x.shape[2] // CELL
    x = x.permute(0, 3, 1, 2).reshape(t, 2, 3, hc, 2, 14, wc, 2, 14)
    # HF row order (t, cell_row, cell_col, i, j), each row (C, tp, p, p).
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * hc * wc * 4, 3 * 2 * 14 * 14)
    return x, (t, 2 * hc, 2 * wc)


@torch.no_grad()
def encode(frames: np.ndarray, cell_mask=None):
    torch.manual_seed(0)
    model = VisionEncoder(get_preset("st3d-tiny")).eval()
    for p in model.parameters():
        p.normal_(0.0, 0.2)
    px, grid = patchify(frames)
    return model.encode(px, torch.tensor([grid]), [torch.arange(grid[0], dtype=torch.float32)], cell_mask=cell_mask)


def cell_cover(mask_px: np.ndarray) -> np.ndarray:
    """[H_px, W_px] bool -> [H, W] fraction of each 28 px cell covered."""
    h, w = mask_px.shape[0] // CELL, mask_px.shape[1] // CELL
    return mask_px.reshape(h, CELL, w, CELL).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def square_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokencomp") / "square.mp4"
    truth = moving_square_video(path, "h264", width=W_PX, height=H_PX, num_frames=FRAMES, fps=24,
                                square_px=56, step_px=(8, 0), start_px=(28, 56))
    sampled = sample_frames(path, fps=24, max_pixels=None, signals_cell_px=CELL)
    assert sampled.num_frames == FRAMES and sampled.signals is not None and sampled.signals.source == "mv"
    tokens = encode(sampled.frames)
    t = FRAMES // 2
    # Ground truth per tubelet t >= 1: "square" cells are at least half covered in frame 2t+1;
    # "background" cells have no square pixel in frames 2t-2 .. 2t+1 (the square never came near).
    square = np.zeros((t, H_PX // CELL, W_PX // CELL), bool)
    near = np.zeros_like(square)
    for i in range(t):
        square[i] = cell_cover(truth.mask(2 * i + 1)) >= 0.5
        for f in range(max(0, 2 * i - 2), 2 * i + 2):
            near[i] |= cell_cover(truth.mask(f)) > 0
    return dict(sampled=sampled, tokens=tokens, square=square, background=~near)


def kept_grid(out, grid) -> np.ndarray:
    """[T, H, W] bool: cells that are a row's representative position."""
    g = np.zeros(grid, bool)
    p = out.pos.numpy()
    g[p[:, 0], p[:, 1], p[:, 2]] = True
    return g


def covered_grid(out, grid) -> np.ndarray:
    """[T, H, W] bool: cells whose content survives in some row (as itself or merged into one)."""
    g = np.zeros(grid, bool)
    for members in out.member_groups():
        m = members.numpy()
        g[m[:, 0], m[:, 1], m[:, 2]] = True
    return g


def _summary(kept, square, background):
    later = np.s_[1:]  # tubelet 0 opens the scene and is kept by its floor, whatever it holds
    recall = kept[later][square[later]].mean()
    bg_kept = kept[later][background[later]].mean()
    return float(recall), float(bg_kept)


@pytest.mark.parametrize("strategy", ["codec", "temporal"])
def test_codec_and_temporal_keep_the_square_and_drop_the_background(square_video, strategy):
    tokens, sampled = square_video["tokens"], square_video["sampled"]
    grid = tuple(tokens.grids[0].tolist())
    out = compress(tokens, strategy, BUDGET, signals=sampled.signals)
    assert len(out) <= BUDGET.target_tokens(grid, sampled.num_frames)
    kept = kept_grid(out, grid)
    recall, bg_kept = _summary(kept, square_video["square"], square_video["background"])
    assert recall >= 0.9, f"{strategy}: kept only {recall:.0%} of the square's cells"
    assert bg_kept <= 0.05, f"{strategy}: kept {bg_kept:.0%} of the static background"


def test_uniform_does_not_follow_the_square(square_video):
    tokens, sampled = square_video["tokens"], square_video["sampled"]
    grid = tuple(tokens.grids[0].tolist())
    square, background = square_video["square"], square_video["background"]
    out = compress(tokens, "uniform", BUDGET, signals=sampled.signals)
    assert len(out) <= BUDGET.target_tokens(grid, sampled.num_frames)
    # It spends its tokens on the background: all of it survives, pooled into blocks ...
    _, bg_covered = _summary(covered_grid(out, grid), square, background)
    assert bg_covered >= 0.9, f"uniform: background covered {bg_covered:.0%}"
    # ... and its rows sit where the block grid puts them, not where the square is.
    kept = kept_grid(out, grid)
    share_on_square = kept[1:][square[1:]].sum() / max(1, kept[1:].sum())
    assert share_on_square <= 0.3, f"uniform: {share_on_square:.0%} of its rows on the square"
    codec = kept_grid(compress(tokens, "codec", BUDGET, signals=sampled.signals), grid)
    assert codec[1:][square[1:]].sum() > 2 * kept[1:][square[1:]].sum()


def test_uniform_t_misses_the_square_in_skipped_tubelets(square_video):
    tokens, sampled = square_video["tokens"], square_video["sampled"]
    grid = tuple(tokens.grids[0].tolist())
    out = compress(tokens, "uniform-t", BUDGET, signals=sampled.signals)
    assert len(out) <= BUDGET.target_tokens(grid, sampled.num_frames)
    recall, _ = _summary(covered_grid(out, grid), square_video["square"], square_video["background"])
    assert recall <= 0.5, f"uniform-t: the square survives in {recall:.0%} of its cells"


def test_codec_before_encoder_selects_the_square_cells(square_video):
    sampled, square, background = square_video["sampled"], square_video["square"], square_video["background"]
    grid = tuple(square_video["tokens"].grids[0].tolist())
    mask = select_cells(sampled.signals, grid, BUDGET)
    assert mask.shape == grid and mask.dtype == torch.bool
    assert int(mask.sum()) <= BUDGET.target_tokens(grid, sampled.num_frames)
    recall, bg_kept = _summary(mask.numpy(), square, background)
    assert recall >= 0.9 and bg_kept <= 0.05, (recall, bg_kept)
    # The encoder's subset encoding runs on exactly those cells, at their true positions.
    subset = encode(sampled.frames, cell_mask=[mask])
    assert torch.equal(subset.pos, mask.nonzero())
    # Same selection as the after-encoder placement (no embedding-change scene on this video).
    after = compress(square_video["tokens"], "codec", BUDGET, signals=sampled.signals)
    assert torch.equal(after.pos, subset.pos)


def test_motion_grid_lines_up_with_the_square(square_video):
    sampled, square = square_video["sampled"], square_video["square"]
    m = motion_grid(sampled.signals, square.shape).numpy()
    # Every cell the square half-covers moved; far background did not.
    assert (m[1:][square[1:]] > 1).all()
    assert (m[1:][square_video["background"][1:]] < 0.5).mean() > 0.95


def test_tome_merges_the_static_background_first(square_video):
    tokens = square_video["tokens"]
    grid = tuple(tokens.grids[0].tolist())
    out = compress(tokens, "tome", BUDGET)
    assert int(out.weight.sum()) == len(tokens)
    # Rows that absorbed many originals are background; the square's cells stay nearly alone.
    size = np.zeros(grid, np.int64)
    for members, w in zip(out.member_groups(), out.weight.tolist()):
        m = members.numpy()
        size[m[:, 0], m[:, 1], m[:, 2]] = w
    square, background = square_video["square"], square_video["background"]
    assert np.median(size[1:][square[1:]]) < np.median(size[1:][background[1:]])


def test_scene_cut_tubelet_gets_the_scene_floor(tmp_path):
    # Two static shots cut at frame 8, with a keyframe at the cut.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (H_PX // 8, W_PX // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    b = 255 - a[::-1]
    path = tmp_path / "cut.mp4"
    write_video(path, [a] * 8 + [b] * 8, 24, "h264", gop=8)  # keyframes at 0 and 8, as at a cut
    sampled = sample_frames(path, fps=24, max_pixels=None, signals_cell_px=CELL)
    assert bool(sampled.signals.keyframe[8]), sampled.signals.picture_types
    tokens = encode(sampled.frames)
    grid = tuple(tokens.grids[0].tolist())
    for strategy in ("codec", "temporal"):
        out = compress(tokens, strategy, BUDGET, signals=sampled.signals)
        per_tubelet = torch.bincount(out.pos[:, 0], minlength=grid[0])
        # Scene starts (tubelets 0 and 4) get scene_boost x the even share (2 x 57 / 8 -> 15).
        assert per_tubelet[0] >= 15 and per_tubelet[4] >= 15, (strategy, per_tubelet.tolist())
        assert all(per_tubelet[t] < per_tubelet[4] for t in (1, 2, 3, 5, 6, 7)), (strategy, per_tubelet.tolist())
        assert all(per_tubelet[t] >= 1 for t in range(grid[0])), "a tubelet went dark"


def test_absorb_counts_the_dropped_background_on_kept_background_rows(square_video):
    """codec keeps the square and drops the static background; with dropped="absorb" the dropped
    background is counted on the kept rows that look like it (the scene-start background of tubelet
    0), not on the square: per kept row, background rows stand for many more tokens."""
    tokens, sampled = square_video["tokens"], square_video["sampled"]
    grid = tuple(tokens.grids[0].tolist())
    plain = compress(tokens, "codec", BUDGET, signals=sampled.signals, dropped="drop")
    out = compress(tokens, "codec", BUDGET, signals=sampled.signals, dropped="absorb")
    assert torch.equal(out.pos, plain.pos) and torch.equal(out.embeds, plain.embeds)
    assert int(plain.weight.sum()) == len(plain) and int(out.weight.sum()) == len(tokens)
    p = out.pos.numpy()
    on_square = np.zeros(len(out), bool)
    on_square[p[:, 0] >= 1] = square_video["square"][p[p[:, 0] >= 1, 0], p[p[:, 0] >= 1, 1], p[p[:, 0] >= 1, 2]]
    in_background = (p[:, 0] == 0) & ~square_video["square"][1][p[:, 1], p[:, 2]] & ~square_video["square"][0][p[:, 1], p[:, 2]]
    assert on_square.sum() >= 5 and in_background.sum() >= 5
    w = out.weight.numpy()
    assert w[in_background].mean() >= 4 * w[on_square].mean(), (w[in_background].mean(), w[on_square].mean())


def test_absorb_goes_to_the_most_similar_kept_row():
    """Hand-made rows: each dropped row's weight lands on its nearest kept row by cosine, in its own video."""
    from encoders.tokens import VisualTokens
    from tokencomp.plan import Plan, absorb_dropped, apply_plan

    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8], [0.7, -0.7], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    pos = torch.tensor([[0, 0, i] for i in range(5)] + [[0, 0, i] for i in range(3)])
    tokens = VisualTokens(embeds=e, pos=pos, time_s=torch.zeros(8), weight=torch.tensor([1, 1, 2, 3, 1, 1, 1, 5]),
                          video_id=torch.tensor([0] * 5 + [1] * 3), grids=torch.tensor([[1, 1, 5], [1, 1, 3]]))
    plan = Plan.keep(torch.tensor([0, 1, 5]), 8)  # video 0 keeps rows 0, 1; video 1 keeps row 5 only
    out = absorb_dropped(tokens, plan, apply_plan(tokens, plan))
    # Row 2 (w 2) and row 4 (w 1) are nearest row 0; row 3 (w 3) nearest row 1; video 1's rows 6, 7
    # (w 1 + 5) can only go to row 5, though they look like row 1 of video 0.
    assert out.weight.tolist() == [1 + 2 + 1, 1 + 3, 1 + 1 + 5]
    assert torch.equal(out.embeds, e[[0, 1, 5]]) and out.members is None

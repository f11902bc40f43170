"""Codec signals on generated moving-square videos: the motion map must light up exactly where
the square is (or was, since the previous sampled frame) and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.codec_signals import MV_CODECS, grid_shape, motion_vector_map, read_codec_signals, residual_map
from pipeline.decode import sample_frames
from pipeline.videogen import moving_square_video

W, H, N, STEP = 128, 96, 24, 4
# Motion counted as "lit": a quarter of the square's step. Encoders code static background with
# occasional half-pel vectors (0.5-0.7 px, seen with MPEG-4 after an I-frame), never more.
LIT = STEP / 4
START = (16, 32)  # macroblock-aligned, so at cell_px 16 every block lies in one cell


def swept_cells(truth, indices, k, cell_px, scale=1.0, full=False):
    """[Hc, Wc] bool: cells the square touches (full=True: covers entirely) in any frame of sample
    k's window, i.e. frames indices[k-1] .. indices[k] (just indices[0] for k = 0)."""
    out_h, out_w = round(truth.height * scale), round(truth.width * scale)
    hc, wc = grid_shape((out_h, out_w), cell_px)
    first = indices[k - 1] if k > 0 else indices[0]
    cells = np.zeros((hc, wc), bool)
    for f in range(first, indices[k] + 1):
        x, y = truth.top_left[f] * scale
        s = truth.square_px * scale
        if full:
            r0, r1 = int(np.ceil(y / cell_px)), int(np.floor((y + s) / cell_px))
            c0, c1 = int(np.ceil(x / cell_px)), int(np.floor((x + s) / cell_px))
        else:
            r0, r1 = int(y // cell_px), int(np.ceil((y + s) / cell_px))
            c0, c1 = int(x // cell_px), int(np.ceil((x + s) / cell_px))
        cells[max(r0, 0) : r1, max(c0, 0) : c1] = True
    return cells


def covered_in_window_ends(truth, indices, k, cell_px, scale=1.0):
    """Cells the square covers fully both at the window's start and at its end: every block there moves."""
    a = swept_cells(truth, [indices[k]], 0, cell_px, scale, full=True)
    b = swept_cells(truth, [indices[k - 1] if k else indices[k]], 0, cell_px, scale, full=True)
    return a & b


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    made = {}
    for name, codec, ext, kw in [
        ("h264", "h264", "mp4", dict(bframes=0, gop=12)),
        ("h264_b", "h264", "mp4", dict(bframes=2, options={"x264-params": "b-adapt=0:b-pyramid=none"})),
        ("mpeg4", "mpeg4", "mp4", dict(bframes=0, gop=12)),
        ("mpeg2_b", "mpeg2video", "mkv", dict(bframes=2, gop=12)),
        ("hevc", "hevc", "mp4", dict(gop=12)),
        ("vp9", "vp9", "webm", dict(gop=12)),
    ]:
        path = d / f"{name}.{ext}"
        truth = moving_square_video(path, codec, width=W, height=H, num_frames=N, fps=24, step_px=(STEP, 0), start_px=START, **kw)
        made[name] = (path, truth)
    return made


@pytest.mark.parametrize("name", ["h264", "mpeg4"])
@pytest.mark.parametrize("fps", [24.0, 6.0])
def test_motion_vectors_light_up_exactly_the_square(videos, name, fps):
    path, truth = videos[name]
    r = sample_frames(path, fps=fps, max_pixels=None, signals_cell_px=16)
    sig = r.signals
    assert sig.source == "mv" and sig.codec == name
    assert sig.motion.shape == (r.num_frames, *grid_shape((H, W), 16))
    for k in range(r.num_frames):
        lit = sig.motion[k] > LIT
        allowed = swept_cells(truth, r.indices, k, 16)
        assert not (lit & ~allowed).any(), f"frame {r.indices[k]}: motion outside the square's cells:\n{np.round(sig.motion[k], 1)}"
        if sig.picture_types[k] == "I" and (k == 0 or r.indices[k] - r.indices[k - 1] == 1):
            assert not lit.any()  # a window holding only an I-frame has no motion vectors
            continue
        core = covered_in_window_ends(truth, r.indices, k, 16)
        assert core.any()
        # Every block inside the square moved STEP px per frame: per-frame motion reads STEP.
        np.testing.assert_allclose(sig.motion[k][core], STEP, atol=1.0, err_msg=f"frame {r.indices[k]} ({sig.picture_types[k]})")


def test_motion_is_in_output_pixels_after_resizing(videos):
    path, truth = videos["h264"]
    # Half the source pixels per side: out 48x64, the square moves STEP/2 output px per frame.
    r = sample_frames(path, fps=24, max_pixels=(H // 2) * (W // 2), signals_cell_px=8)
    assert r.frames.shape[1:3] == (H // 2, W // 2)
    sig = r.signals
    assert sig.motion.shape[1:] == (6, 8)
    for k in range(1, r.num_frames):
        if sig.picture_types[k] == "I":
            continue
        lit = sig.motion[k] > LIT / 2
        assert not (lit & ~swept_cells(truth, r.indices, k, 8, scale=0.5)).any()
        core = covered_in_window_ends(truth, r.indices, k, 8, scale=0.5)
        np.testing.assert_allclose(sig.motion[k][core], STEP / 2, atol=0.5)


def test_i_frames_carry_no_motion_and_are_keyframes(videos):
    path, _ = videos["h264"]
    r = sample_frames(path, fps=24, signals_cell_px=16)  # every frame: each window is one frame
    sig = r.signals
    types = np.array(sig.picture_types)
    assert (types[::12] == "I").all() and set(types) == {"I", "P"}, types  # gop=12
    assert (sig.motion[types == "I"] == 0).all()
    np.testing.assert_array_equal(sig.keyframe, types == "I")
    assert (sig.motion[types == "P"].max(axis=(1, 2)) > 1).all()


def test_keyframe_flag_covers_skipped_frames(videos):
    path, _ = videos["h264"]
    idx = np.array([0, 10, 14, 23])  # frame 12 (an I-frame) lies inside the window (10, 14]
    sig = read_codec_signals(path, idx, (H, W), 16)
    assert sig.picture_types[2] == "P"
    np.testing.assert_array_equal(sig.keyframe, [True, False, True, False])


def test_b_frames_are_read_and_stay_on_the_square(videos):
    path, truth = videos["h264_b"]
    r = sample_frames(path, fps=24, signals_cell_px=16)
    sig = r.signals
    assert "B" in sig.picture_types
    for k in range(1, r.num_frames):
        lit = sig.motion[k] > LIT
        # A B-frame's vectors point to the anchors before and after it (at most 3 frames away
        # with 2 B-frames), so the square may be anywhere it was in that span.
        span = [max(r.indices[k] - 3, 0), min(r.indices[k] + 3, N - 1)]
        allowed = swept_cells(truth, span, 1, 16)  # union over every frame in span
        assert not (lit & ~allowed).any(), np.round(sig.motion[k], 1)
        if sig.picture_types[k] != "I":
            assert lit.any(), f"frame {k} ({sig.picture_types[k]}) shows no motion"


def test_b_frame_vectors_are_divided_by_their_anchor_distance(videos):
    """MPEG-2 B-frames point to the anchors before and after them (1-2 frames away) and P-frames
    to the anchor 3 frames back: after normalising, every block inside the square reads STEP."""
    path, truth = videos["mpeg2_b"]
    r = sample_frames(path, fps=24, signals_cell_px=16)
    sig = r.signals
    assert sig.source == "mv" and {"B", "P"} <= set(sig.picture_types)
    values = []
    for k in range(1, r.num_frames):
        if sig.picture_types[k] == "I":
            continue
        values.append(sig.motion[k][covered_in_window_ends(truth, r.indices, k, 16)])
    # The encoder's search occasionally settles on a near-zero vector for a 12 px move (P-frames
    # 3 frames from their anchor); all but a few cells must read STEP.
    values = np.concatenate(values)
    assert np.mean(np.abs(values - STEP) <= 0.5) >= 0.9, values


def test_demo_finds_the_square(capsys):
    import argparse

    from pipeline import cmd_demo_codec as cmd_demo

    rc = cmd_demo.run(argparse.Namespace(codec="h264", fps=4.0, cell_px=16, keep=None))
    out = capsys.readouterr().out
    assert rc == 0 and "RESULT: detected motion matches the square's true path in all 8" in out, out


@pytest.mark.parametrize("name", ["hevc", "vp9"])
def test_codecs_without_motion_vectors_get_a_residual_map(videos, name):
    path, truth = videos[name]
    assert name not in MV_CODECS
    r = sample_frames(path, fps=6, max_pixels=None, signals_cell_px=16)
    sig = r.signals
    assert sig.source == "residual" and sig.codec == name
    assert (sig.motion[0] == 0).all()
    for k in range(1, r.num_frames):
        lit = sig.motion[k] > 8  # of 255: well above compression noise, well below the square's change
        allowed = swept_cells(truth, r.indices, k, 16)
        # The residual compares two sampled frames: the square's cells at both ends change.
        ends = swept_cells(truth, [r.indices[k - 1]], 0, 16, full=True) | swept_cells(truth, [r.indices[k]], 0, 16, full=True)
        assert not (lit & ~allowed).any(), np.round(sig.motion[k], 1)
        assert lit[ends].all(), np.round(sig.motion[k], 1)


def test_residual_map_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 20, 30, 3), dtype=np.uint8)
    got = residual_map(frames, cell_px=16)
    assert got.shape == (3, 2, 2)
    assert (got[0] == 0).all()
    diff = np.abs(frames[2].astype(float) - frames[1].astype(float)).mean(axis=2)
    np.testing.assert_allclose(got[2, 1, 1], diff[16:20, 16:30].mean(), rtol=1e-5)
    np.testing.assert_allclose(got[2, 0, 0], diff[:16, :16].mean(), rtol=1e-5)


def test_motion_vector_map_is_an_area_weighted_mean_in_output_pixels():
    dtype = np.dtype([("source", "<i4"), ("w", "u1"), ("h", "u1"), ("dst_x", "<i2"), ("dst_y", "<i2"),
                      ("motion_x", "<i4"), ("motion_y", "<i4"), ("motion_scale", "<u2")])
    mvs = np.zeros(3, dtype)
    # (dst_x, dst_y, w, h, motion_x, motion_y, scale): two blocks in cell (0, 0), one in cell (1, 1).
    for j, (x, y, w, h, mx, my, sc) in enumerate([(8, 8, 16, 16, 12, 16, 4), (20, 4, 8, 8, 0, 0, 4), (40, 40, 16, 16, -8, 0, 2)]):
        mvs[j] = (-1, w, h, x, y, mx, my, sc)
    # Source 64x64 -> output 32x32, cells of 16 output px: a 2x2 grid; vectors halve.
    got = motion_vector_map(mvs, (64, 64), (32, 32), 16, np.ones(3))
    assert got.shape == (4,)
    block0 = np.hypot(12, 16) / 4 / 2  # 2.5 output px
    np.testing.assert_allclose(got[0], (block0 * 256 + 0 * 64) / (256 + 64))
    np.testing.assert_allclose(got[3], 8 / 2 / 2)
    assert got[1] == 0 and got[2] == 0
    np.testing.assert_allclose(motion_vector_map(mvs, (64, 64), (32, 32), 16, np.full(3, 2.0)), got / 2)


def test_grid_covers_the_output_frame():
    assert grid_shape((96, 128), 28) == (4, 5)
    assert grid_shape((16, 1920), 28) == (1, 69)
    assert grid_shape((28, 56), 28) == (1, 2)


def test_read_codec_signals_rejects_bad_indices(videos):
    path, _ = videos["h264"]
    with pytest.raises(ValueError, match="increasing"):
        read_codec_signals(path, np.array([3, 2]), (H, W), 16)
    with pytest.raises(ValueError, match="outside"):
        read_codec_signals(path, np.array([0, N]), (H, W), 16)


@pytest.mark.parametrize("name", ["h264", "vp9"])
def test_one_pass_frames_and_signals_equal_the_separate_paths(videos, name):
    """With signals, frames come from the signals pass: they must equal decord's and PyAV's."""
    path, _ = videos[name]
    both = sample_frames(path, fps=6, max_pixels=64 * 48, signals_cell_px=16)
    for backend in ("decord", "pyav"):
        plain = sample_frames(path, fps=6, max_pixels=64 * 48, backend=backend)
        np.testing.assert_array_equal(both.indices, plain.indices)
        np.testing.assert_array_equal(both.frames, plain.frames)
    alone = read_codec_signals(path, both.indices, both.frames.shape[1:3], 16)
    np.testing.assert_array_equal(both.signals.motion, alone.motion)
    assert both.signals.picture_types == alone.picture_types and both.signals.source == alone.source
    # decord with signals: frames from decord, signals from their own pass; same result.
    via_decord = sample_frames(path, fps=6, max_pixels=64 * 48, backend="decord", signals_cell_px=16)
    assert via_decord.backend == "decord"
    np.testing.assert_array_equal(via_decord.signals.motion, both.signals.motion)


def test_motion_vectors_are_the_same_every_run(tmp_path):
    """Codec-aware compression must be deterministic; frame-threaded decoding once gave different
    B-frame vectors in about 1 run in 8 on this video (the demo-codec video)."""
    from pipeline.decode import sample_frames
    from pipeline.videogen import moving_square_video

    path = tmp_path / "v.mp4"
    moving_square_video(path, "h264", width=192, height=128, num_frames=48, fps=24, square_px=32,
                        step_px=(3, 1), start_px=(16, 32), gop=24)
    first = sample_frames(path, fps=4.0, max_pixels=None, signals_cell_px=16).signals
    for _ in range(12):
        again = sample_frames(path, fps=4.0, max_pixels=None, signals_cell_px=16).signals
        assert again.picture_types == first.picture_types
        assert np.array_equal(again.motion, first.motion)

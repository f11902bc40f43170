"""Frame sampling: which frames are taken, their timestamps, the two backends, the caps."""

from __future__ import annotations

import av
import numpy as np
import pytest

from encoders.errors import BadRequest
from pipeline.decode import BACKENDS, cap_frames, get_backend, sample_frames, select_frames
from pipeline.errors import VideoDecodeError, VideoLimitExceeded
from pipeline.video_io import output_size, probe_video, resize_rgb
from pipeline.videogen import moving_square_video, write_video


def decode_all_pyav(path) -> np.ndarray:
    """Reference: every frame, sequentially decoded by PyAV, in presentation order."""
    with av.open(str(path)) as c:
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)), key=lambda t: t[0])
    return np.stack([f for _, f in frames])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    made = {}
    # 48 frames at 24 fps, keyframes every 8 frames: sparse sampling must seek between GOPs.
    made["h264"] = d / "cfr.mp4"
    moving_square_video(made["h264"], "h264", width=96, height=64, num_frames=48, fps=24, gop=8, square_px=16, step_px=(1, 1))
    for key, codec, ext, kw in [
        ("h264_b", "h264", "mp4", dict(bframes=3, options={"x264-params": "b-adapt=0:b-pyramid=normal"})),
        ("hevc", "hevc", "mp4", {}),
        ("vp9", "vp9", "webm", {}),
        ("mpeg4", "mpeg4", "avi", dict(bframes=2)),
    ]:
        made[key] = d / f"{key}.{ext}"
        moving_square_video(made[key], codec, width=96, height=64, num_frames=24, fps=24, gop=8, square_px=16, step_px=(2, 1), **kw)
    # Variable frame rate: bursts of 50 fps between 5 fps gaps.
    made["vfr_pts"] = np.round(np.cumsum([0.0] + [0.02 if i % 4 else 0.2 for i in range(1, 30)]), 3)
    made["vfr"] = d / "vfr.mp4"
    moving_square_video(made["vfr"], "h264", width=64, height=64, num_frames=30, fps=10, square_px=16, vfr_pts=list(made["vfr_pts"]))
    made["vfr_mkv"] = d / "vfr.mkv"
    moving_square_video(made["vfr_mkv"], "h264", width=64, height=64, num_frames=30, fps=10, square_px=16, vfr_pts=list(made["vfr_pts"]))
    return made


# --- which frames (pure) ---------------------------------------------------------------------


def test_fps_takes_the_frame_nearest_each_tick():
    t = np.arange(30) / 30.0  # 1 s at 30 fps
    np.testing.assert_array_equal(select_frames(t, fps=10, video_fps=30), np.arange(0, 30, 3))
    np.testing.assert_array_equal(select_frames(t, fps=2, video_fps=30), [0, 15])
    # 7 fps: ticks at k/7 s; frame nearest each.
    expected = [int(np.argmin(np.abs(t - k / 7))) for k in range(7)]
    np.testing.assert_array_equal(select_frames(t, fps=7, video_fps=30), expected)


def test_fps_at_or_above_the_video_rate_takes_every_frame():
    t = np.arange(12) / 24.0
    np.testing.assert_array_equal(select_frames(t, fps=24, video_fps=24), np.arange(12))
    np.testing.assert_array_equal(select_frames(t, fps=100, video_fps=24), np.arange(12))


def test_fps_on_variable_frame_rate_uses_true_times_without_duplicates():
    t = np.array([0.0, 0.02, 0.04, 0.5, 0.52, 1.4])
    got = select_frames(t, fps=3, video_fps=(len(t) - 1) / 1.4)  # average rate 3.57 fps
    # ticks 0, 1/3, 2/3, 1, 4/3 s -> nearest frames 0, 3 (0.5), 4 (0.52), 5 (1.4), 5 (again: dropped)
    np.testing.assert_array_equal(got, [0, 3, 4, 5])
    assert len(np.unique(got)) == len(got)


def test_num_frames_is_evenly_spaced_and_exact():
    t = np.arange(10) / 10.0
    np.testing.assert_array_equal(select_frames(t, num_frames=4, video_fps=10), [0, 3, 6, 9])
    np.testing.assert_array_equal(select_frames(t, num_frames=1, video_fps=10), [0])
    np.testing.assert_array_equal(select_frames(t, num_frames=50, video_fps=10), np.arange(10))
    for n in range(1, 11):
        assert len(select_frames(t, num_frames=n, video_fps=10)) == n


def test_cap_thins_evenly_keeping_both_ends():
    idx = np.arange(0, 100, 2)
    got = cap_frames(idx, 5)
    np.testing.assert_array_equal(got, idx[[0, 12, 24, 37, 49]])
    assert cap_frames(idx, 500) is idx


def test_output_size_keeps_aspect_ratio_under_the_pixel_cap():
    assert output_size(720, 1280, None) == (720, 1280)
    assert output_size(720, 1280, 10**7) == (720, 1280)
    h, w = output_size(720, 1280, 640 * 360)
    assert h * w <= 640 * 360 and abs(w / h - 1280 / 720) < 0.01
    h, w = output_size(16, 1920, 1000)
    assert h >= 1 and h * w <= 1000


# --- real videos -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["vfr", "vfr_mkv"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_timestamps_are_the_encoded_pts_for_variable_frame_rate(videos, key, backend):
    pts = videos["vfr_pts"]
    r = sample_frames(videos[key], fps=1000, backend=backend)
    assert r.backend == backend and r.num_frames == len(pts)
    np.testing.assert_allclose(r.time_s, pts, atol=1e-3)
    # 2 fps on the true clock: the frame nearest each 0.5 s tick, not every n-th frame.
    r2 = sample_frames(videos[key], fps=2, backend=backend)
    expected = [int(np.argmin(np.abs(pts - k / 2))) for k in range(int(pts[-1] * 2) + 1)]
    np.testing.assert_array_equal(r2.indices, expected)
    np.testing.assert_allclose(r2.time_s, pts[expected], atol=1e-3)


def test_fps_sampling_on_a_constant_rate_video(videos):
    r = sample_frames(videos["h264"], fps=4)
    np.testing.assert_array_equal(r.indices, np.arange(0, 48, 6))
    np.testing.assert_allclose(r.time_s, np.arange(8) / 4, atol=1e-6)
    assert r.sampled_fps == 4 and abs(r.video_fps - 24) < 1e-6 and abs(r.duration_s - 2.0) < 1e-6
    assert (r.source_width, r.source_height, r.codec) == (96, 64, "h264")
    assert not r.capped and r.notes == ()


@pytest.mark.parametrize("key", ["h264", "h264_b", "vp9"])
def test_backends_agree_bit_for_bit_with_each_other_and_a_full_decode(videos, key):
    reference = decode_all_pyav(videos[key])
    for kwargs in [dict(num_frames=5), dict(fps=5), dict(fps=1000)]:
        a = sample_frames(videos[key], backend="decord", max_pixels=None, **kwargs)
        b = sample_frames(videos[key], backend="pyav", max_pixels=None, **kwargs)
        assert (a.backend, b.backend) == ("decord", "pyav")
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.time_s, b.time_s)
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(b.frames, reference[b.indices])


@pytest.mark.parametrize("key", ["hevc", "mpeg4"])
def test_codecs_decord_mis_seeks_go_to_pyav(videos, key):
    """decord 0.6 returns frames shifted by the B-frame reorder delay for these: never used for them."""
    reference = decode_all_pyav(videos[key])
    r = sample_frames(videos[key], fps=5, max_pixels=None)
    assert r.backend == "pyav" and r.notes == ()
    np.testing.assert_array_equal(r.frames, reference[r.indices])
    with pytest.raises(VideoDecodeError, match=f"not used for {key}"):
        sample_frames(videos[key], fps=5, backend="decord")


def test_backends_agree_after_resizing(videos):
    a = sample_frames(videos["h264"], num_frames=7, backend="decord", max_pixels=48 * 32)
    b = sample_frames(videos["h264"], num_frames=7, backend="pyav", max_pixels=48 * 32)
    assert a.frames.shape == (7, 32, 48, 3)
    np.testing.assert_array_equal(a.frames, b.frames)
    full = decode_all_pyav(videos["h264"])
    np.testing.assert_array_equal(b.frames[3], resize_rgb(full[b.indices[3]], (32, 48)))


def test_frame_cap_thins_evenly_and_says_so(videos):
    r = sample_frames(videos["h264"], fps=1000, max_frames=5)
    assert r.num_frames == 5 and r.requested_frames == 48 and r.capped
    np.testing.assert_array_equal(r.indices, cap_frames(np.arange(48), 5))
    assert any("max_frames=5" in n for n in r.notes)
    assert abs(r.sampled_fps - 5 / r.duration_s) < 1e-9


def test_pixel_cap_resizes_every_frame(videos):
    r = sample_frames(videos["h264"], num_frames=3, max_pixels=1000)
    h, w = r.frames.shape[1:3]
    assert h * w <= 1000 and abs(w / h - 1.5) < 0.1 and r.frames.dtype == np.uint8


def test_av1_decodes_with_pyav(tmp_path):
    path = tmp_path / "av1.mkv"  # decord 0.6 cannot open AV1 at all
    moving_square_video(path, "av1", width=64, height=64, num_frames=6, square_px=16)
    r = sample_frames(path, fps=1000, signals_cell_px=16)
    assert r.backend == "pyav" and r.num_frames == 6 and r.codec == "av1"
    assert r.signals.source == "residual" and r.signals.motion.shape == (6, 4, 4)


def test_probe_indexes_frames_without_decoding(videos):
    info = probe_video(videos["h264"])
    assert info.num_frames == 48 and info.codec == "h264" and (info.width, info.height) == (96, 64)
    np.testing.assert_array_equal(np.flatnonzero(info.keyframe), np.arange(0, 48, 8))


def test_registry_lists_known_backends():
    assert set(BACKENDS) >= {"decord", "pyav"}
    with pytest.raises(BadRequest, match="decord.*pyav"):
        get_backend("opencv")
    with pytest.raises(BadRequest, match="backend"):
        sample_frames("whatever.mp4", backend="opencv")


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(fps=2, num_frames=3), "not both"), (dict(fps=0), "fps"), (dict(num_frames=0), "num_frames"),
     (dict(max_frames=0), "max_frames"), (dict(timeout_s=-1), "timeout_s"), (dict(max_pixels=0), "max_pixels")],
)
def test_bad_requests_are_rejected_before_decoding(kwargs, match):
    with pytest.raises(BadRequest, match=match):
        sample_frames("never-opened.mp4", **kwargs)


def test_timeout_raises_instead_of_hanging(tmp_path):
    path = tmp_path / "long.mp4"
    frames = (np.full((64, 64, 3), i % 256, np.uint8) for i in range(400))
    write_video(path, frames, fps=25, codec="h264")
    with pytest.raises(VideoLimitExceeded, match="timeout"):
        sample_frames(path, fps=1000, timeout_s=0.001)


def test_bench_decode_runs_and_writes_only_its_section(videos, tmp_path):
    """The benchmark script itself (on a tiny clip, one run): figures come out, other sections stay."""
    import argparse

    from bench.decode import SECTION, measure, report, write_section

    rows = measure(videos["h264"], frames=4, repeats=1)
    assert rows["num_source_frames"] == 48 and all(rows[k][1] >= 0 for k in ("full_plain", "full_mvs", "signals_32"))
    text = report(rows, "test machine", argparse.Namespace(frames=4, repeats=1))
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Encoder\n\nkeep me\n\n## Decode\n\nold figures\n\n## LLM\n\nkeep me too\n")
    write_section(md, SECTION, text)
    out = md.read_text()
    assert "old figures" not in out and out.count("keep me") == 2 and "test machine" in out
    assert out.index("## Encoder") < out.index("## Decode") < out.index("## LLM")

"""Bad input never crashes and never hangs: each case ends in a usable result or a
VideoDecodeError with one sentence naming the file, within the timeout, in the library and
through the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import cli
from pipeline.decode import sample_frames
from pipeline.errors import UnsupportedVideo, VideoDecodeError
from pipeline.videogen import moving_square_video

TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parents[1]


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    src = d / "source.mp4"
    moving_square_video(src, "h264", width=96, height=64, num_frames=48, gop=12, square_px=16)
    data = src.read_bytes()
    mkv = d / "source.mkv"  # Matroska is streamable: a cut file still has its first frames
    moving_square_video(mkv, "h264", width=96, height=64, num_frames=48, gop=12, square_px=16)
    cases = {
        "zero_byte": d / "zero.mp4",
        "random_bytes": d / "random.mp4",
        "truncated_mp4": d / "truncated.mp4",
        "truncated_mkv": d / "truncated.mkv",
        "corrupt_middle": d / "corrupt.mp4",
        "text_as_mp4": d / "notes.mp4",
        "audio_only": d / "audio.m4a",
        "missing": d / "does-not-exist.mp4",
        "directory": d / "folder.mp4",
        "one_frame": d / "one.mp4",
        "extreme_aspect": d / "wide.mp4",
        "vp9_webm": d / "clip.webm",
    }
    cases["zero_byte"].write_bytes(b"")
    cases["random_bytes"].write_bytes(rng.bytes(20000))
    cases["truncated_mp4"].write_bytes(data[: len(data) * 6 // 10])
    cases["truncated_mkv"].write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 6 // 10])
    corrupt = bytearray(data)
    mid = len(corrupt) // 3
    corrupt[mid : mid + 3000] = rng.bytes(3000)
    cases["corrupt_middle"].write_bytes(bytes(corrupt))
    cases["text_as_mp4"].write_text("these are meeting notes, not a video\n" * 50)
    _audio_only(cases["audio_only"])
    cases["directory"].mkdir()
    moving_square_video(cases["one_frame"], "h264", width=64, height=64, num_frames=1, square_px=16)
    moving_square_video(cases["extreme_aspect"], "h264", width=1920, height=16, num_frames=12, square_px=16, step_px=(8, 0))
    moving_square_video(cases["vp9_webm"], "vp9", width=96, height=64, num_frames=12, square_px=16)
    return cases


# What each case must end in: an error class, or "ok" (a usable result).
EXPECTED = {
    "zero_byte": (VideoDecodeError, "empty"),
    "random_bytes": (UnsupportedVideo, "not a video"),
    "truncated_mp4": (UnsupportedVideo, "truncated"),  # the index (moov) is at the end: nothing to read
    "truncated_mkv": "ok",
    "corrupt_middle": "ok",
    "text_as_mp4": (UnsupportedVideo, "not a video"),
    "audio_only": (UnsupportedVideo, "no video stream"),
    "missing": (VideoDecodeError, "no such file"),
    "directory": (VideoDecodeError, "directory"),
    "one_frame": "ok",
    "extreme_aspect": "ok",
    "vp9_webm": "ok",
}


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_bad_input_ends_in_a_result_or_one_clear_sentence(bad, case, backend):
    path = bad[case]
    started = time.monotonic()
    expected = EXPECTED[case]
    if expected == "ok":
        r = sample_frames(path, fps=4, backend=backend, timeout_s=TIMEOUT_S, signals_cell_px=16)
        assert r.num_frames >= 1 and r.frames.dtype == np.uint8 and r.frames.ndim == 4
        assert len(r.time_s) == r.num_frames and np.all(np.diff(r.time_s) > 0)
        assert r.signals.motion.shape[0] == r.num_frames
    else:
        cls, words = expected
        with pytest.raises(cls) as info:
            sample_frames(path, fps=4, backend=backend, timeout_s=TIMEOUT_S, signals_cell_px=16)
        message = str(info.value)
        assert str(path) in message and words in message and "\n" not in message, message
    assert time.monotonic() - started < TIMEOUT_S


def test_damaged_files_say_what_was_lost(bad):
    r = sample_frames(bad["truncated_mkv"], fps=1000, timeout_s=TIMEOUT_S)
    assert 0 < r.num_frames < 48  # the frames before the cut, no more
    r = sample_frames(bad["corrupt_middle"], fps=1000, backend="auto", timeout_s=TIMEOUT_S)
    assert r.backend == "pyav" and any("decord could not read" in n or "could not be decoded" in n for n in r.notes), r.notes


def test_one_frame_and_extreme_aspect_results(bad):
    r = sample_frames(bad["one_frame"], fps=2, signals_cell_px=28)
    assert r.num_frames == 1 and r.signals.picture_types == ("I",) and r.signals.keyframe.tolist() == [True]
    r = sample_frames(bad["extreme_aspect"], num_frames=4, max_pixels=10_000, signals_cell_px=28)
    h, w = r.frames.shape[1:3]
    assert h * w <= 10_000 and h >= 1 and w / h > 50
    assert r.signals.motion.shape == (4, -(-h // 28), -(-w // 28))


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_cli_prints_one_line_and_exits_nonzero(bad, case, capsys):
    rc = cli.main(["probe", str(bad[case]), "--timeout", str(TIMEOUT_S)])
    out, err = capsys.readouterr()
    if EXPECTED[case] == "ok":
        assert rc == 0 and err == "" and "signals:" in out
    else:
        assert rc != 0 and out == ""
        assert err.count("\n") == 1 and err.startswith("vidsieve: error: ") and str(bad[case]) in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize("case", ["random_bytes", "missing", "audio_only"])
def test_cli_subprocess_has_no_traceback(bad, case):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "probe", str(bad[case])],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("vidsieve: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""

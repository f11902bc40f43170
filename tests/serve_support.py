"""Helpers for the serve/ tests: test videos, bad files, a real tiny engine, and an engine stand-in.

`StandInEngine` is used ONLY by tests about the code around the engine (schemas, limits, queueing, auth);
it really opens the video with PyAV (frame count, timestamps, size) and returns an answer dict of the
engine contract's shape. End-to-end tests use `real_engine()` on a tiny random Qwen2.5-VL checkpoint.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from pipeline.videogen import moving_square_video


def make_video(path: Path, *, num_frames: int = 8, fps: float = 8.0, width: int = 112, height: int = 84) -> Path:
    moving_square_video(path, "h264", width=width, height=height, num_frames=num_frames, fps=fps, square_px=24, step_px=(6, 2))
    return path


def make_audio_only(path: Path) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.linspace(0, 200, 16000)) * 0.3).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def bad_files(dir: Path, good: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """name -> (file, accepted statuses): the decode issue's bad inputs, made from `good`."""
    dir.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    cases = {
        "zero-byte.mp4": (b"", (422,)),
        "random.mp4": (np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes(), (415, 422)),
        "truncated.mp4": (data[: len(data) // 3], (415, 422)),
        "text.mp4": (b"this is a text file, renamed to look like a video\n" * 200, (415,)),
    }
    out = {}
    for name, (payload, statuses) in cases.items():
        (dir / name).write_bytes(payload)
        out[name] = (dir / name, statuses)
    out["audio-only.mp4"] = (make_audio_only(dir / "audio-only.mp4"), (415,))
    return out


# Frames up to 224x168 keep their size (a 6x8 grid of 28-px cells): enough cells for the overlay to mean something.
TINY_PROCESSOR = dict(min_pixels=56 * 56, max_pixels=224 * 168)


def tiny_model_dir(tmp_dir: Path) -> Path:
    """A tiny random Qwen2.5-VL checkpoint (tests/fixtures/tiny_qwen.py) written to `tmp_dir`."""
    from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

    return make_tiny_qwen2_5_vl(tmp_dir / "tiny-qwen", processor_overrides=TINY_PROCESSOR)


@functools.cache
def shared_tiny_model_dir() -> Path:
    """One tiny random checkpoint for the whole test session (in a temp dir)."""
    return tiny_model_dir(Path(tempfile.mkdtemp(prefix="vidsieve-serve-tests-")))


@functools.cache
def shared_tiny_engine():
    """One real `pipeline.engine.Engine` on `shared_tiny_model_dir()`, shared by the serve test modules.

    Returns (engine, model_dir).
    """
    from pipeline.engine import Engine

    model_dir = shared_tiny_model_dir()
    return Engine(model_dir=model_dir), model_dir


class StandInEngine:
    """Engine-shaped stand-in for tests of the service code around the engine (not of the engine).

    gate: when given, each request blocks until the gate is set (to hold workers busy).
    """

    model_name = "stand-in"

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.delay_s = delay_s
        self.gate = gate
        self.calls = 0
        self._lock = threading.Lock()

    def ask(self, video_path, question, options) -> dict:
        with self._lock:
            self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay_s)
        return self._result(video_path, question, options)

    def ask_stream(self, video_path, question, options):
        result = self.ask(video_path, question, options)
        for word in result["answer"].split(" "):
            yield {"delta": word + " "}
        yield {"result": result}

    def _result(self, video_path, question, options) -> dict:
        with av.open(str(video_path)) as c:
            stream = c.streams.video[0]
            times = [float(f.time) for f in c.decode(stream)]
            width, height = stream.codec_context.width, stream.codec_context.height
        fps = options.sampling_fps or 2.0
        sampled = [t for i, t in enumerate(times) if i % max(1, round(len(times) / max(1, fps * (times[-1] + 1e-9)))) == 0]
        sampled = sampled[: options.max_frames]
        if len(sampled) % 2:
            sampled.append(sampled[-1])
        grid = [len(sampled) // 2, max(1, height // 28), max(1, width // 28)]
        before = math.prod(grid)
        keep = before if options.keep_ratio is None else max(1, round(before * options.keep_ratio))
        cells = [[t, h, w] for t in range(grid[0]) for h in range(grid[1]) for w in range(grid[2])]
        kept = cells[::max(1, before // keep)][:keep]
        answer = f"a square moves ({question[:20]})"
        return {
            "answer": answer, "output_token_ids": list(range(5)), "kept": kept,
            "stats": {
                "frames": len(sampled), "grid": grid, "tokens_before": before, "tokens_after": len(kept),
                "tokens_per_frame": len(kept) / len(sampled), "keep_ratio": len(kept) / before,
                "strategy": options.strategy, "budget": options.budget_label, "position_mode": options.position_mode,
                "dropped": options.dropped, "attention": options.attention,
                "sampled_fps": fps, "frame_times_s": sampled, "signal_source": None, "model": self.model_name,
                "timings_ms": {"decode": 1.0, "select": 0.0, "encode": 2.0, "compress": 0.5, "prefill": 3.0,
                               "generate": 4.0, "total": 10.5},
            },
        }


def served_files(app) -> list[Path]:
    """Every file under the app's request temp dirs (should be none between requests)."""
    root = app.state.uploads_root
    # os.walk skips a directory that a request's cleanup removes mid-walk (rglob raised on it).
    return [Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files]



class LiveServer:
    """A real uvicorn server for `app` on 127.0.0.1 and a free port, in a thread (for browsers and benchmarks)."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="live-uvicorn", daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

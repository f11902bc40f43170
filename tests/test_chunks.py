"""Long videos in chunks: the next run of frames decodes while the current one is encoded, memory is
bounded by the chunk size, and the answers are those of the whole-video path (qwen2_5_vl: exactly).

Real H.264 files (with B-frames and several GOPs), real PyAV/decord decoding, a tiny random
Qwen2.5-VL checkpoint with vidsieve's encoder."""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch

from encoders.errors import BadRequest
from pipeline.decode import sample_frame_chunks, sample_frames
from pipeline.engine import Engine
from pipeline.options import AskOptions
from pipeline.prefetch import Prefetch
from pipeline.videogen import moving_square_video
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

PROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny"), processor_overrides=PROCESSOR))


def _video(path, frames, **kw):
    moving_square_video(path, "h264", width=112, height=112, num_frames=frames, fps=8.0, square_px=28,
                        step_px=(3, 1), gop=12, bframes=2, **kw)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _video(tmp_path_factory.mktemp("vid") / "long.mp4", 40)


# ---------------------------------------------------------------- Prefetch


def test_prefetch_keeps_order_runs_ahead_and_is_bounded():
    produced, consumed, ahead = [], [], []

    def source():
        for i in range(8):
            produced.append(i)
            yield i

    for item in Prefetch(source(), depth=1):
        time.sleep(0.03)  # a slow consumer: the producer must wait for it, not run away
        ahead.append(len(produced) - len(consumed))
        consumed.append(item)
    assert consumed == list(range(8))
    # one item in the consumer's hands, one waiting, one being produced: never more
    assert max(ahead) <= 3
    assert max(ahead) >= 2  # and it really ran ahead of the consumer


def test_prefetch_raises_the_sources_error_in_the_consumer():
    def source():
        yield 1
        raise RuntimeError("broken chunk")

    got = []
    with pytest.raises(RuntimeError, match="broken chunk"):
        for item in Prefetch(source()):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_producer_when_the_consumer_leaves():
    finished = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            finished.set()

    for item in Prefetch(source()):
        if item == 2:
            break
    assert finished.wait(2.0), "the producer kept running after the consumer stopped"


# ---------------------------------------------------------------- chunked decoding


@pytest.mark.parametrize("chunk", [2, 6, 7, 100])
def test_chunks_are_the_whole_requests_frames_and_signals(video, chunk):
    whole = sample_frames(video, fps=8.0, signals_cell_px=28)
    parts = list(sample_frame_chunks(video, chunk, fps=8.0, signals_cell_px=28))
    assert len(parts) == -(-whole.num_frames // chunk)
    assert all(p.num_frames <= chunk for p in parts)
    assert np.array_equal(np.concatenate([p.frames for p in parts]), whole.frames)
    assert np.array_equal(np.concatenate([p.indices for p in parts]), whole.indices)
    assert np.array_equal(np.concatenate([p.time_s for p in parts]), whole.time_s)
    assert {p.sampled_fps for p in parts} == {whole.sampled_fps}
    # motion of the frames between two samples lands in the later one, across chunk borders too
    assert np.array_equal(np.concatenate([p.signals.motion for p in parts]), whole.signals.motion)
    assert sum((p.signals.picture_types for p in parts), ()) == whole.signals.picture_types
    assert np.array_equal(np.concatenate([p.signals.keyframe for p in parts]), whole.signals.keyframe)


def test_chunks_without_signals_match_with_every_backend(video):
    for backend in ("decord", "pyav"):
        whole = sample_frames(video, num_frames=13, backend=backend)
        parts = list(sample_frame_chunks(video, 4, num_frames=13, backend=backend))
        assert np.array_equal(np.concatenate([p.frames for p in parts]), whole.frames), backend
        assert parts[0].backend == backend


def test_bad_chunk_size_is_one_clear_error(video):
    with pytest.raises(BadRequest, match="chunk_frames must be a positive integer"):
        next(sample_frame_chunks(video, 0, fps=8.0))
    with pytest.raises(BadRequest, match="chunk_frames must be an even integer"):
        AskOptions(chunk_frames=3)
    with pytest.raises(BadRequest, match="codec_placement='before'"):
        AskOptions(strategy="codec", keep_ratio=0.5, codec_placement="before", chunk_frames=4)


def test_chunked_decoding_holds_about_one_chunk(tmp_path):
    # numpy reports its allocations to tracemalloc: the peak while walking the chunks of a video
    # 4x longer stays that of a few chunks, while decoding it whole grows with its length.
    short, long_ = _video(tmp_path / "s.mp4", 24), _video(tmp_path / "l.mp4", 96)
    frame_bytes = 112 * 112 * 3

    def peak(fn):
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def walk(path):
        for chunk in Prefetch(sample_frame_chunks(path, 8, num_frames=96, signals_cell_px=28)):
            assert chunk.num_frames <= 8

    whole = peak(lambda: sample_frames(long_, num_frames=96, signals_cell_px=28))
    chunked_short, chunked_long = peak(lambda: walk(short)), peak(lambda: walk(long_))
    assert whole >= 96 * frame_bytes
    assert chunked_long < 0.5 * whole
    assert chunked_long < 1.5 * chunked_short + 4 * 8 * frame_bytes  # does not grow with the video


# ---------------------------------------------------------------- the engine


@pytest.mark.parametrize("strategy,budget", [("none", {}), ("codec", {"keep_ratio": 0.3}), ("tome", {"keep_ratio": 0.5})])
def test_chunked_answers_equal_whole_video_answers(engine, video, strategy, budget):
    base = dict(strategy=strategy, fps=8.0, max_new_tokens=6, **budget)
    whole = engine.ask(video, "What moves?", AskOptions(**base))
    for chunk in (4, 10):
        r = engine.ask(video, "What moves?", AskOptions(**base, chunk_frames=chunk))
        assert r["output_token_ids"] == whole["output_token_ids"], chunk
        assert r["kept"] == whole["kept"]
        s, w = r["stats"], whole["stats"]
        assert (s["grid"], s["tokens_before"], s["tokens_after"], s["frames"]) == (w["grid"], w["tokens_before"], w["tokens_after"], w["frames"])
        assert s["frame_times_s"] == w["frame_times_s"] and s["sampled_fps"] == w["sampled_fps"]
        assert s["chunks"] == {**s["chunks"], "count": -(-40 // chunk), "chunk_frames": chunk, "overlapped": True}
    assert whole["stats"]["chunks"] is None


def test_chunked_tokens_equal_whole_video_tokens(engine, video):
    opts = AskOptions(fps=8.0)
    _, whole = engine.decode_encode(video, opts)
    _, chunked = engine.decode_encode(video, AskOptions(fps=8.0, chunk_frames=6))
    assert torch.equal(chunked.tokens.pos, whole.tokens.pos)
    assert torch.equal(chunked.tokens.grids, whole.tokens.grids)
    assert torch.equal(chunked.tokens.time_s, whole.tokens.time_s)
    torch.testing.assert_close(chunked.tokens.embeds, whole.tokens.embeds, rtol=1e-5, atol=1e-5)
    # the same runs through the separate stages (what Ray's encode actor does): same tokens
    staged = engine.encode(engine.decode(video, opts), AskOptions(fps=8.0, chunk_frames=6))
    assert staged.chunks["count"] == 7 and staged.chunks["overlapped"] is False
    torch.testing.assert_close(staged.tokens.embeds, chunked.tokens.embeds, rtol=1e-5, atol=1e-5)


def test_decoding_overlaps_encoding(engine, video, monkeypatch):
    # Record when each chunk's decode and encode run: chunk k+1's decode starts before chunk k's
    # encode ends (the overlap the chunking exists for).
    import pipeline.engine as engine_mod

    events = []
    real_chunks, real_run = engine_mod.sample_frame_chunks, Engine._encode_run

    def timed_chunks(*a, **kw):
        it = real_chunks(*a, **kw)
        while True:
            start = time.perf_counter()
            try:
                chunk = next(it)
            except StopIteration:
                return
            events.append(("decode", start, time.perf_counter()))
            yield chunk

    def timed_run(self, *a):
        start = time.perf_counter()
        time.sleep(0.05)  # an encoder slower than the decoder, as on real hardware for big models
        out = real_run(self, *a)
        events.append(("encode", start, time.perf_counter()))
        return out

    monkeypatch.setattr(engine_mod, "sample_frame_chunks", timed_chunks)
    monkeypatch.setattr(Engine, "_encode_run", timed_run)
    engine.decode_encode(video, AskOptions(fps=8.0, chunk_frames=8))
    decodes = [e for e in events if e[0] == "decode"]
    encodes = [e for e in events if e[0] == "encode"]
    assert len(decodes) == len(encodes) == 5
    assert any(decodes[k + 1][1] < encodes[k][2] for k in range(4))


def test_chunk_size_must_fit_the_tubelet(engine, video):
    # AskOptions only sees even sizes; the engine checks against its model's own tubelet
    engine.llm.temporal_patch_size = 4
    try:
        with pytest.raises(BadRequest, match="multiple of the model's 4-frame tubelet"):
            engine.decode_encode(video, AskOptions(fps=8.0, chunk_frames=6))
    finally:
        engine.llm.temporal_patch_size = 2

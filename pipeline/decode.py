"""Frame sampling: which frames to take from a video, and two backends that decode them.

    sample_frames(path, fps=2.0)                 -> SampledFrames (frames [F, H, W, 3] uint8 RGB)
    sample_frames(path, num_frames=32, signals_cell_px=28)   # + codec signals on a 28 px grid

Every request goes through the same steps:
1. `probe_video` (PyAV, no decoding) indexes the frames' timestamps and keyframes, and rejects
   files that are not usable video before decord ever sees them.
2. `select_frames` (pure) picks frame indices from those timestamps.
3. A backend from `BACKENDS` decodes just those frames at native size; each kept frame is
   resized at once with `resize_rgb`, so only one full-size frame is held at a time and both
   backends return identical arrays.
4. Optionally `read_codec_signals` adds picture types and a motion map.

The whole request runs under a timeout: a decoder that hangs makes `sample_frames` raise
`VideoLimitExceeded` after `timeout_s` instead of hanging the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import numpy as np

from encoders.errors import BadRequest
from encoders.signals import CodecSignals
from pipeline.errors import VideoDecodeError, VideoLimitExceeded
from pipeline.video_io import VideoInfo, open_container, output_size, probe_video, resize_rgb, video_stream

log = logging.getLogger(__name__)

DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 256
DEFAULT_MAX_PIXELS = 768 * 28 * 28  # Qwen2.5-VL's per-frame pixel cap for video
DEFAULT_TIMEOUT_S = 120.0
_DECORD_CHUNK = 8  # frames decord decodes per call: bounds memory to 8 native-size frames
# Codecs decord 0.6 decodes correctly at random access (measured against a full PyAV decode, see
# docs/codecs.md). For HEVC and MPEG-4 with B-frames it returns frames shifted by the reorder
# delay, silently; AV1 it cannot open. Those go to PyAV.
DECORD_CODECS = frozenset({"h264", "vp9"})


@dataclass(frozen=True)
class SampledFrames:
    """Frames sampled from one video, with their true timestamps.

    frames: [F, H, W, 3] uint8 RGB, H*W <= the request's max_pixels.
    time_s: [F] float64 seconds from the first frame, from the stream's PTS (exact for VFR).
    indices: [F] int64 positions of the frames in the video (presentation order).
    sampled_fps: the effective sampling rate: the requested fps (capped at the video's own
        rate) when sampling by fps, else F / duration_s (what the LLM's M-RoPE uses).
    video_fps, duration_s, source_width, source_height, codec: what the stream says.
    backend: the backend that decoded the frames ("decord" or "pyav").
    requested_frames: how many frames the request selected before the max_frames cap;
        `capped` is True when the cap thinned them (evenly) to F.
    notes: one line per thing the caller should know (cap applied, fallback, skipped frames).
    signals: codec signals for the same frames, when requested.
    """

    frames: np.ndarray
    time_s: np.ndarray
    indices: np.ndarray
    sampled_fps: float
    video_fps: float
    duration_s: float
    source_width: int
    source_height: int
    codec: str
    backend: str
    requested_frames: int
    notes: tuple[str, ...] = ()
    signals: CodecSignals | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def capped(self) -> bool:
        return self.requested_frames > self.num_frames


# ---------------------------------------------------------------------------------------------
# Which frames


def select_frames(
    time_s: np.ndarray, *, fps: float | None = None, num_frames: int | None = None, video_fps: float
) -> np.ndarray:
    """Indices [F] (sorted, unique) of the frames to take, from timestamps `time_s` [N].

    fps: the frame nearest each k / fps seconds (k = 0, 1, ... up to the last frame), duplicates
        dropped; every frame when fps >= video_fps.
    num_frames: that many frames evenly spaced over the frame indices (every frame when
        num_frames >= N).
    """
    n = int(time_s.shape[0])
    if num_frames is not None:
        if num_frames >= n:
            return np.arange(n, dtype=np.int64)
        return np.unique(np.round(np.linspace(0, n - 1, num_frames)).astype(np.int64))
    assert fps is not None
    if fps >= video_fps:
        return np.arange(n, dtype=np.int64)
    targets = np.arange(0, int(np.floor(time_s[-1] * fps + 1e-9)) + 1, dtype=np.float64) / fps
    right = np.clip(np.searchsorted(time_s, targets), 1, n - 1) if n > 1 else np.zeros(len(targets), np.int64)
    left = right - 1 if n > 1 else right
    nearest = np.where(np.abs(time_s[left] - targets) <= np.abs(time_s[right] - targets), left, right)
    return np.unique(nearest.astype(np.int64))


def cap_frames(indices: np.ndarray, max_frames: int) -> np.ndarray:
    """Thin `indices` evenly to at most `max_frames` (first and last kept)."""
    if len(indices) <= max_frames:
        return indices
    return indices[np.unique(np.round(np.linspace(0, len(indices) - 1, max_frames)).astype(np.int64))]


# ---------------------------------------------------------------------------------------------
# Backends: fn(info, indices, out_hw, cancel) -> [F, out_h, out_w, 3] uint8, frame k = indices[k]

DecodeFn = Callable[[VideoInfo, np.ndarray, tuple[int, int], threading.Event], np.ndarray]
BACKENDS: dict[str, DecodeFn] = {}


def register_backend(name: str) -> Callable[[DecodeFn], DecodeFn]:
    def add(fn: DecodeFn) -> DecodeFn:
        BACKENDS[name] = fn
        return fn

    return add


def get_backend(name: str) -> DecodeFn:
    """The decode function registered as `name`; BadRequest listing the known names otherwise."""
    if name not in BACKENDS:
        raise BadRequest(f"unknown decode backend {name!r}; known: {', '.join(sorted(BACKENDS))} (or 'auto').")
    return BACKENDS[name]


class _NotForDecord(VideoDecodeError):
    """decord is known to mis-decode this codec; "auto" goes straight to PyAV without a note."""


class _Cancelled(Exception):
    """The caller's timeout passed; the worker stops at the next frame."""


@register_backend("pyav")
def decode_pyav(info: VideoInfo, indices: np.ndarray, out_hw: tuple[int, int], cancel: threading.Event) -> np.ndarray:
    """Decode `indices` with PyAV, seeking to the keyframe before a target when that skips frames."""
    out = np.zeros((len(indices), *out_hw, 3), np.uint8)
    got = np.zeros(len(indices), bool)
    index_of = {int(p): i for i, p in enumerate(info.pts)}
    key_idx = np.flatnonzero(info.keyframe)
    with open_container(info.path) as container:
        stream = video_stream(container, info.path)
        stream.thread_type = "AUTO"
        k = 0  # next target in `indices`
        position = -1  # index of the last frame decoded
        seeked_to = -1  # keyframe index of the last seek: never seek to the same place twice
        while k < len(indices):
            start = _keyframe_before(key_idx, int(indices[k]))
            if position < 0 or (start > position + 1 and start > seeked_to):
                container.seek(int(info.pts[start]), stream=stream, backward=True, any_frame=False)
                seeked_to = start
            progressed = False
            for frame in _decode_frames(container, stream, info.path):
                if cancel.is_set():
                    raise _Cancelled
                i = index_of.get(frame.pts if frame.pts is not None else -1)
                if i is None:
                    continue
                position = max(position, i)
                progressed = True
                while k < len(indices) and indices[k] < i:
                    k += 1  # a target the decoder never produced (corrupt data): left missing
                if k < len(indices) and indices[k] == i:
                    out[k] = resize_rgb(frame.to_ndarray(format="rgb24"), out_hw)
                    got[k] = True
                    k += 1
                if k >= len(indices):
                    break
                nearest = _keyframe_before(key_idx, int(indices[k]))
                if nearest > position + 1 and nearest > seeked_to:
                    break  # a keyframe closer to the next target: seek there instead of decoding up to it
            if not progressed:
                break  # nothing more could be decoded: the rest of the file is unreadable
    return _check_complete(out, got, indices, info)


@register_backend("decord")
def decode_decord(info: VideoInfo, indices: np.ndarray, out_hw: tuple[int, int], cancel: threading.Event) -> np.ndarray:
    """Decode `indices` with decord, checking its frame table agrees with the PyAV index."""
    if info.codec not in DECORD_CODECS:
        raise _NotForDecord(
            f"{info.path}: the decord backend is not used for {info.codec} video (its seeking returns wrong frames "
            f"or fails; decord is used for {', '.join(sorted(DECORD_CODECS))}); use backend 'pyav' or 'auto'."
        )
    import decord  # imported here: it is optional for PyAV-only use and slow to import

    reader = decord.VideoReader(info.path, ctx=decord.cpu(0))
    if len(reader) != info.num_frames:
        raise VideoDecodeError(f"{info.path}: decord sees {len(reader)} frames, the container index {info.num_frames}.")
    stamps = reader.get_frame_timestamp(indices.tolist())[:, 0]
    if np.abs(stamps - stamps[0] - (info.time_s[indices] - info.time_s[indices[0]])).max(initial=0) > 0.5 / info.video_fps:
        raise VideoDecodeError(f"{info.path}: decord's frame timestamps disagree with the container index.")
    out = np.empty((len(indices), *out_hw, 3), np.uint8)
    for lo in range(0, len(indices), _DECORD_CHUNK):
        if cancel.is_set():
            raise _Cancelled
        chunk = indices[lo : lo + _DECORD_CHUNK].tolist()
        batch = reader.get_batch(chunk).asnumpy()
        for j in range(len(chunk)):
            out[lo + j] = resize_rgb(batch[j], out_hw)
    return out


def _keyframe_before(key_idx: np.ndarray, target: int) -> int:
    """Index of the last keyframe at or before `target` (0 when none is flagged)."""
    j = int(np.searchsorted(key_idx, target, side="right")) - 1
    return int(key_idx[j]) if j >= 0 else 0


def _decode_frames(container, stream, path: str):
    """Yield decoded frames from the current position, skipping packets the decoder rejects."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError as e:
                log.info("%s: skipped an undecodable packet (%s)", path, e)
    except av.error.FFmpegError as e:
        log.info("%s: demuxing stopped (%s)", path, e)


def _check_complete(out: np.ndarray, got: np.ndarray, indices: np.ndarray, info: VideoInfo) -> np.ndarray:
    if got.all():
        return out
    if not got.any():
        raise VideoDecodeError(f"{info.path}: none of the {len(indices)} requested frames could be decoded (corrupt video data).")
    raise _PartialDecode(out[got], indices[got], int((~got).sum()))


class _PartialDecode(Exception):
    """Some requested frames could not be decoded; carries the ones that could."""

    def __init__(self, frames: np.ndarray, indices: np.ndarray, missing: int):
        super().__init__(f"{missing} frames undecodable")
        self.frames, self.indices, self.missing = frames, indices, missing


# ---------------------------------------------------------------------------------------------
# The request


def sample_frames(
    path: str | Path,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    backend: str = "auto",
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    signals_cell_px: int | None = None,
) -> SampledFrames:
    """Sample frames from the video at `path` (see the module docstring).

    fps / num_frames: sample at `fps` frames per second, or `num_frames` evenly spaced frames;
        neither: fps = DEFAULT_FPS. Giving both is a BadRequest.
    max_frames: more selected frames than this are thinned evenly (`result.capped`, a note).
    max_pixels: frames larger than this are scaled down (aspect ratio kept); None keeps native.
    backend: "auto" (decord, falling back to PyAV on any decord failure), "decord" or "pyav".
        With signals, "auto" and "pyav" take frames and signals from one sequential PyAV pass.
    timeout_s: raise VideoLimitExceeded when decoding takes longer (None: no limit).
    signals_cell_px: also read codec signals on a grid of cells this many output pixels wide.
    Raises VideoDecodeError (or a subclass) naming the file when it cannot be used.
    """
    _check_request(fps, num_frames, max_frames, max_pixels, backend, timeout_s, signals_cell_px)
    if fps is None and num_frames is None:
        fps = DEFAULT_FPS
    request = dict(fps=fps, num_frames=num_frames, max_frames=max_frames, max_pixels=max_pixels, backend=backend)
    cancel = threading.Event()
    return _run_with_timeout(
        lambda: _sample(path, signals_cell_px=signals_cell_px, cancel=cancel, **request), timeout_s, path, cancel
    )


@dataclass(frozen=True)
class SamplingPlan:
    """What a request will decode, known from the container index alone (no frame decoded yet).

    indices: the selected frames after the max_frames cap; requested: how many were selected
    before it; out_hw: output frame size; sampled_fps: as `SampledFrames.sampled_fps` when every
    planned frame decodes.
    """

    info: VideoInfo
    indices: np.ndarray
    requested: int
    out_hw: tuple[int, int]
    sampled_fps: float
    fps: float | None
    notes: tuple[str, ...]


def plan_sampling(path, *, fps, num_frames, max_frames, max_pixels) -> SamplingPlan:
    info = probe_video(path)
    selected = select_frames(info.time_s, fps=fps, num_frames=num_frames, video_fps=info.video_fps)
    indices = cap_frames(selected, max_frames)
    notes = []
    if info.truncated:
        notes.append(f"the file ends early or is corrupt: only its first {info.num_frames} frames were readable")
    if len(indices) < len(selected):
        notes.append(f"max_frames={max_frames}: {len(selected)} selected frames thinned evenly to {len(indices)}")
    out_hw = output_size(info.height, info.width, max_pixels)
    return SamplingPlan(info=info, indices=indices, requested=len(selected), out_hw=out_hw,
                        sampled_fps=_sampled_fps(fps, len(indices), len(selected), info), fps=fps, notes=tuple(notes))


def _sampled_fps(fps: float | None, decoded: int, selected: int, info: VideoInfo) -> float:
    """The requested fps (capped at the video's rate) when every selected frame was decoded, else F / duration."""
    if fps is not None and decoded == selected:
        return float(min(float(fps), info.video_fps))
    return float(decoded / info.duration_s)


def _sample(path, *, fps, num_frames, max_frames, max_pixels, backend, signals_cell_px, cancel) -> SampledFrames:
    plan = plan_sampling(path, fps=fps, num_frames=num_frames, max_frames=max_frames, max_pixels=max_pixels)
    notes = list(plan.notes)
    frames, indices, used, signals = _decode_span(plan, plan.indices, backend, signals_cell_px, cancel, notes)
    return _sampled(plan, frames, indices, used, signals, notes, _sampled_fps(fps, len(indices), plan.requested, plan.info))


def _sampled(plan: SamplingPlan, frames, indices, used, signals, notes, sampled_fps: float) -> SampledFrames:
    info = plan.info
    return SampledFrames(
        frames=frames,
        time_s=info.time_s[indices],
        indices=indices,
        sampled_fps=float(sampled_fps),
        video_fps=info.video_fps,
        duration_s=info.duration_s,
        source_width=info.width,
        source_height=info.height,
        codec=info.codec,
        backend=used,
        requested_frames=plan.requested,
        notes=tuple(notes),
        signals=signals,
    )


def _decode_span(plan: SamplingPlan, indices: np.ndarray, backend, signals_cell_px, cancel, notes, lead: int | None = None):
    """Decode `indices` (a run of the plan's frames) -> (frames, indices decoded, backend, signals).

    lead: the plan's frame just before this run (chunked decoding): the signals pass starts there so
    the first frame's motion window (lead, first] is the same as in one whole-video pass.
    """
    info, out_hw = plan.info, plan.out_hw
    frames = signals = None
    used = "pyav"
    if signals_cell_px is not None and backend != "decord":
        # Signals need a sequential decode of the whole span anyway: take the frames from that
        # same pass (identical to either backend's, see test_decode) instead of decoding twice.
        from pipeline.codec_signals import decode_with_signals  # lazy: codec_signals imports decode lazily

        span = indices if lead is None else np.concatenate([[lead], indices])
        kept, decoded, signals = decode_with_signals(info, span, out_hw, signals_cell_px, keep_frames=True, cancel=cancel)
        if cancel.is_set():
            raise _Cancelled
        if lead is not None:
            kept, decoded, signals = kept[1:], decoded[1:], _drop_first(signals)
        if decoded.all():
            frames = kept
        else:
            signals = None  # corrupt data on the way: the backends' error handling below decides
    if frames is None:
        frames, indices, used = _decode_with_fallback(info, indices, out_hw, backend, cancel, notes)
    if signals_cell_px is not None and signals is None:
        from pipeline.codec_signals import read_codec_signals

        span = indices if lead is None else np.concatenate([[lead], indices])
        signals = read_codec_signals(info, span, out_hw, signals_cell_px, cancel=cancel,
                                     frames=frames if lead is None else None)
        if lead is not None:
            signals = _drop_first(signals)
    return frames, indices, used, signals


def _drop_first(signals: CodecSignals) -> CodecSignals:
    return replace(signals, picture_types=signals.picture_types[1:], motion=signals.motion[1:], keyframe=signals.keyframe[1:])


def sample_frame_chunks(
    path: str | Path,
    chunk_frames: int,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    backend: str = "auto",
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    signals_cell_px: int | None = None,
) -> Iterator[SampledFrames]:
    """`sample_frames` in runs of `chunk_frames` frames, decoded one run at a time (a generator).

    The frames are those `sample_frames` returns with the same arguments, cut into consecutive
    runs; each chunk is a `SampledFrames` with absolute timestamps and indices, the whole request's
    `sampled_fps` and `requested_frames`, and codec signals equal to the whole pass's rows for its
    frames. Only the chunk being decoded is held here, so a consumer that drops each chunk keeps
    memory bounded by the chunk size, whatever the video's length. `timeout_s` applies per chunk.
    The plan's notes come with the first chunk; a chunk with undecodable frames notes it and is
    shorter (later chunks keep their frames).
    """
    _check_request(fps, num_frames, max_frames, max_pixels, backend, timeout_s, signals_cell_px)
    if not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
        raise BadRequest(f"chunk_frames must be a positive integer, got {chunk_frames!r}.")
    if fps is None and num_frames is None:
        fps = DEFAULT_FPS
    cancel = threading.Event()
    plan = _run_with_timeout(lambda: plan_sampling(path, fps=fps, num_frames=num_frames, max_frames=max_frames,
                                                   max_pixels=max_pixels), timeout_s, path, cancel)
    for lo in range(0, len(plan.indices), chunk_frames):
        run = plan.indices[lo : lo + chunk_frames]
        lead = int(plan.indices[lo - 1]) if lo else None
        notes = list(plan.notes) if lo == 0 else []

        def work(run=run, lead=lead, notes=notes):
            return _decode_span(plan, run, backend, signals_cell_px, cancel, notes, lead=lead)

        frames, indices, used, signals = _run_with_timeout(work, timeout_s, path, cancel)
        yield _sampled(plan, frames, indices, used, signals, notes, plan.sampled_fps)


def _decode_with_fallback(info, indices, out_hw, backend, cancel, notes):
    """(frames, indices, backend used). "auto": decord, then PyAV if decord fails in any way."""
    names = ["decord", "pyav"] if backend == "auto" else [backend]
    for attempt, name in enumerate(names):
        try:
            frames = get_backend(name)(info, indices, out_hw, cancel)
            return frames, indices, name
        except _PartialDecode as partial:
            notes.append(f"{partial.missing} of {len(indices)} selected frames could not be decoded and were skipped")
            return partial.frames, partial.indices, name
        except _Cancelled:
            raise
        except _NotForDecord as e:
            if attempt + 1 == len(names):
                raise VideoDecodeError(e.message) from None
            continue
        except Exception as e:  # noqa: BLE001 - any decord failure means: try PyAV
            if attempt + 1 == len(names):
                if isinstance(e, VideoDecodeError):
                    raise
                raise VideoDecodeError(f"{info.path}: the {name} backend failed ({type(e).__name__}: {_one_line(e)}).") from e
            log.info("%s: %s failed (%s: %s); falling back to PyAV", info.path, name, type(e).__name__, _one_line(e))
            notes.append(f"decord could not read the file ({type(e).__name__}); decoded with PyAV")
    raise AssertionError("unreachable")


def _run_with_timeout(fn, timeout_s: float | None, path, cancel: threading.Event):
    """Run fn() in a daemon thread; raise VideoLimitExceeded if it is not done in timeout_s.

    A thread (not a process) keeps frames zero-copy; a decoder stuck inside C keeps its thread
    until it returns, but the caller is free, and `cancel` stops Python-level loops at once.
    """
    result: dict[str, object] = {}

    def work():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    if timeout_s is None:
        work()
    else:
        worker = threading.Thread(target=work, name="vidsieve-decode", daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            cancel.set()
            raise VideoLimitExceeded(
                f"{path}: decoding took longer than the {timeout_s:g} s timeout "
                f"(stopped after {time.monotonic() - started:.1f} s; sample fewer frames or raise timeout_s)."
            )
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def _check_request(fps, num_frames, max_frames, max_pixels, backend, timeout_s, signals_cell_px) -> None:
    if fps is not None and num_frames is not None:
        raise BadRequest(f"give fps or num_frames, not both (got fps={fps}, num_frames={num_frames}).")
    if fps is not None and not fps > 0:
        raise BadRequest(f"fps must be > 0, got {fps}.")
    for name, value in (("num_frames", num_frames), ("max_frames", max_frames), ("signals_cell_px", signals_cell_px)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise BadRequest(f"{name} must be a positive integer, got {value!r}.")
    if max_pixels is not None and max_pixels < 1:
        raise BadRequest(f"max_pixels must be >= 1 (or None for native size), got {max_pixels}.")
    if timeout_s is not None and not timeout_s > 0:
        raise BadRequest(f"timeout_s must be > 0 (or None), got {timeout_s}.")
    if backend != "auto":
        get_backend(backend)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__

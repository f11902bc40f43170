"""Codec signals for sampled frames: picture types, keyframes and a per-cell motion map.

    read_codec_signals(path, frame_indices, out_hw=(H, W), cell_px=28) -> CodecSignals

One sequential PyAV decode from the keyframe before the first sampled frame to the last one.
For codecs whose FFmpeg decoder exports motion vectors (`MV_CODECS`, measured in
docs/codecs.md) the decoder runs with `flags2=+export_mvs` and every decoded frame's vectors
are binned into cells of the output frame; other codecs (HEVC, VP9, AV1...) get a residual map
(mean absolute difference against the previous sampled frame) and `source="residual"`.

Motion-vector units: each vector is scaled to output-frame pixels and divided by the distance
(in frames) to the anchor frame it refers to (previous I/P frame for forward vectors, next one
for backward vectors), so a square moving 4 px per frame reads about 4 whatever the GOP shape.
With H.264 B-pyramids or multiple references the true reference may be nearer than that
anchor; such vectors read low (documented in docs/codecs.md).
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import av
import numpy as np

from encoders.signals import CodecSignals
from pipeline.video_io import VideoInfo, open_container, probe_video, resize_rgb, video_stream

log = logging.getLogger(__name__)

# Codec -> picture types whose MOTION_VECTORS side data FFmpeg's decoder fills with real vectors
# (measured, see docs/codecs.md). MPEG-4 Part 2 B-frames export only zero vectors (their direct-mode
# motion is not exported), so they are left out rather than averaged in as "no motion".
MV_CODECS: dict[str, frozenset[str]] = {
    "h264": frozenset({"P", "B"}),
    "mpeg4": frozenset({"P"}),
    "mpeg2video": frozenset({"P", "B"}),
}

_PICTURE_TYPE = {"I": "I", "SI": "I", "P": "P", "SP": "P", "S": "P", "B": "B", "BI": "B"}


def grid_shape(out_hw: tuple[int, int], cell_px: int) -> tuple[int, int]:
    """(Hc, Wc) = cells covering an out_h x out_w frame: ceil(out_h / cell_px), ceil(out_w / cell_px)."""
    return math.ceil(out_hw[0] / cell_px), math.ceil(out_hw[1] / cell_px)


def motion_vector_map(
    mvs: np.ndarray, src_hw: tuple[int, int], out_hw: tuple[int, int], cell_px: int, ref_distance: np.ndarray
) -> np.ndarray:
    """[Hc * Wc] float64: area-weighted mean |motion vector| of the blocks centred in each cell.

    mvs: FFmpeg AVMotionVector records [M] (fields w, h, dst_x, dst_y = block centre in source
        pixels, motion_x, motion_y, motion_scale).
    ref_distance: [M] frames between the block's frame and its reference (vectors are divided by it).
    Cells no block lands in (intra-coded or outside) read 0.
    """
    hc, wc = grid_shape(out_hw, cell_px)
    if len(mvs) == 0:
        return np.zeros(hc * wc)
    sy, sx = out_hw[0] / src_hw[0], out_hw[1] / src_hw[1]
    scale = np.maximum(mvs["motion_scale"].astype(np.float64), 1.0)
    mag = np.hypot(mvs["motion_x"] * sx, mvs["motion_y"] * sy) / scale / ref_distance
    col = np.clip(np.floor(mvs["dst_x"] * sx / cell_px), 0, wc - 1).astype(np.int64)
    row = np.clip(np.floor(mvs["dst_y"] * sy / cell_px), 0, hc - 1).astype(np.int64)
    cell = row * wc + col
    area = mvs["w"].astype(np.float64) * mvs["h"].astype(np.float64)
    num = np.bincount(cell, weights=mag * area, minlength=hc * wc)
    den = np.bincount(cell, weights=area, minlength=hc * wc)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def residual_map(frames: np.ndarray, cell_px: int) -> np.ndarray:
    """[F, Hc, Wc] float32: mean |frame_k - frame_{k-1}| per cell (0..255, all channels); 0 for k = 0.

    frames: [F, H, W, 3] uint8. Edge cells are averaged over the pixels they hold.
    """
    f, h, w, _ = frames.shape
    hc, wc = grid_shape((h, w), cell_px)
    out = np.zeros((f, hc, wc), np.float32)
    if f < 2:
        return out
    ones = np.ones((h, w), np.float64)
    counts = _cell_sums(ones, cell_px, hc, wc)
    for k in range(1, f):  # one pair at a time: never a [F, H, W, 3] float copy
        diff = np.abs(frames[k].astype(np.int16) - frames[k - 1].astype(np.int16)).mean(axis=2)
        out[k] = _cell_sums(diff, cell_px, hc, wc) / counts
    return out


def _cell_sums(img: np.ndarray, cell_px: int, hc: int, wc: int) -> np.ndarray:
    h, w = img.shape
    padded = np.zeros((hc * cell_px, wc * cell_px), np.float64)
    padded[:h, :w] = img
    return padded.reshape(hc, cell_px, wc, cell_px).sum(axis=(1, 3))


def read_codec_signals(
    path: str | Path | VideoInfo,
    frame_indices: np.ndarray,
    out_hw: tuple[int, int],
    cell_px: int,
    *,
    frames: np.ndarray | None = None,
    cancel: threading.Event | None = None,
) -> CodecSignals:
    """Codec signals for the frames at `frame_indices` (presentation order, as from `sample_frames`).

    path: the video, or its `VideoInfo` from `probe_video` (saves a probe).
    out_hw: size of the sampled output frames; cells are `cell_px` pixels of that frame.
    frames: [F, out_h, out_w, 3] the sampled frames, used for residual maps (taken from this
        function's own decode pass when not given).
    Motion of every frame between two sampled frames is averaged into the later one.
    """
    _, _, signals = decode_with_signals(path, frame_indices, out_hw, cell_px, frames=frames, cancel=cancel)
    return signals


def decode_with_signals(
    path: str | Path | VideoInfo,
    frame_indices: np.ndarray,
    out_hw: tuple[int, int],
    cell_px: int,
    *,
    frames: np.ndarray | None = None,
    keep_frames: bool = False,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray | None, np.ndarray, CodecSignals]:
    """One sequential PyAV pass giving the signals and, with `keep_frames`, the sampled frames too.

    Returns (frames [F, out_h, out_w, 3] uint8 or None, decoded [F] bool, signals). Frames are
    resized with `resize_rgb`, so they equal what either decode backend returns; `decoded` is
    False for sampled frames the pass could not decode (corrupt data).
    """
    info = path if isinstance(path, VideoInfo) else probe_video(path)
    indices = np.asarray(frame_indices, dtype=np.int64)
    if indices.ndim != 1 or len(indices) == 0 or np.any(np.diff(indices) <= 0):
        raise ValueError(f"read_codec_signals: frame_indices must be a non-empty increasing 1-D array, got {indices!r}")
    if indices[-1] >= info.num_frames or indices[0] < 0:
        raise ValueError(f"read_codec_signals: frame index {int(indices[-1])} outside the video's {info.num_frames} frames")
    use_mv = info.codec in MV_CODECS
    kept = np.zeros((len(indices), *out_hw, 3), np.uint8) if (keep_frames or (frames is None and not use_mv)) else None
    types, keyframe, mv_sum, mv_count, seen = _decode_pass(info, indices, out_hw, cell_px, use_mv, kept, cancel or threading.Event())
    hc, wc = grid_shape(out_hw, cell_px)
    if use_mv:
        motion = (mv_sum / np.maximum(mv_count, 1)[:, None]).reshape(len(indices), hc, wc).astype(np.float32)
    else:
        motion = residual_map(frames if frames is not None else kept, cell_px)
    missing = int((~seen).sum())
    if missing:
        log.warning("%s: %d sampled frames were not decoded in the signals pass; their picture type is '?'", info.path, missing)
    signals = CodecSignals(
        picture_types=tuple(types),
        motion=motion,
        keyframe=keyframe,
        cell_px=int(cell_px),
        source="mv" if use_mv else "residual",
        codec=info.codec,
    )
    return (kept if keep_frames else None), seen, signals


def _decode_pass(info: VideoInfo, indices: np.ndarray, out_hw, cell_px: int, use_mv: bool, kept, cancel: threading.Event):
    """Decode frames keyframe-before-first .. last sample; per sample window: types, keys, MV sums.

    kept: None, or [F, out_h, out_w, 3] uint8 filled with the sampled frames as they pass.
    """
    f = len(indices)
    hc, wc = grid_shape(out_hw, cell_px)
    types = ["?"] * f
    keyframe = np.zeros(f, bool)
    seen = np.zeros(f, bool)
    mv_sum = np.zeros((f, hc * wc))
    mv_count = np.zeros(f)
    index_of = {int(p): i for i, p in enumerate(info.pts)}
    sample_of = {int(v): k for k, v in enumerate(indices)}
    key_idx = np.flatnonzero(info.keyframe)
    before = key_idx[key_idx <= indices[0]]
    start = int(before[-1]) if len(before) else 0
    src_hw = (info.height, info.width)
    trusted = MV_CODECS.get(info.codec, frozenset())
    pending_b: list[tuple[int, np.ndarray]] = []  # B-frames wait for the next anchor (their backward reference)
    last_anchor = None

    def window(i: int) -> int | None:
        """Sample k whose window (indices[k-1], indices[k]] holds frame i; the first window is the frame itself."""
        k = int(np.searchsorted(indices, i, side="left"))
        if k >= f or (k == 0 and i != indices[0]):
            return None
        return k

    def add(i: int, mvs: np.ndarray, prev_anchor: int | None, next_anchor: int | None) -> None:
        k = window(i)
        if k is None or mvs is None:
            return
        fwd = float(i - prev_anchor) if prev_anchor is not None else 1.0
        bwd = float(next_anchor - i) if next_anchor is not None else 1.0
        dist = np.where(mvs["source"] > 0, bwd, fwd) if len(mvs) else np.ones(0)
        mv_sum[k] += motion_vector_map(mvs, src_hw, out_hw, cell_px, np.maximum(dist, 1.0))
        mv_count[k] += 1

    with open_container(info.path) as container:
        stream = video_stream(container, info.path)
        # Frame threading made the exported motion vectors differ run to run (B-frames: 1 run in 8 of
        # the demo video); codec-aware compression must be deterministic, so MVs decode on one thread.
        stream.thread_type = "NONE" if use_mv else "AUTO"
        if use_mv:
            stream.codec_context.options = {"flags2": "+export_mvs"}
        if start > 0:
            container.seek(int(info.pts[start]), stream=stream, backward=True, any_frame=False)
        from pipeline.decode import _decode_frames  # shared packet-error handling

        for frame in _decode_frames(container, stream, info.path):
            if cancel.is_set():
                break
            i = index_of.get(frame.pts if frame.pts is not None else -1)
            if i is None or i < start:
                continue
            ptype = _PICTURE_TYPE.get(av.video.frame.PictureType(frame.pict_type).name, "?")
            k = window(i)
            if k is not None and (frame.key_frame or ptype == "I"):
                keyframe[k] = True
            kk = sample_of.get(i)
            if kk is not None:
                types[kk], seen[kk] = ptype, True
                if kept is not None:
                    kept[kk] = resize_rgb(frame.to_ndarray(format="rgb24"), out_hw)
            mvs = None
            if use_mv and ptype in trusted:
                side = frame.side_data.get("MOTION_VECTORS")
                mvs = side.to_ndarray() if side is not None else np.zeros(0, dtype=_empty_mv_dtype())
            if ptype == "B":
                pending_b.append((i, mvs))
            else:
                for bi, bmvs in pending_b:
                    add(bi, bmvs, last_anchor, i)
                pending_b.clear()
                add(i, mvs, last_anchor, None)
                last_anchor = i
            if i >= indices[-1] and not pending_b:
                break
        for bi, bmvs in pending_b:
            add(bi, bmvs, last_anchor, None)
    return types, keyframe, mv_sum, mv_count, seen


def _empty_mv_dtype() -> np.dtype:
    return np.dtype([("source", "<i4"), ("w", "u1"), ("h", "u1"), ("dst_x", "<i2"), ("dst_y", "<i2"),
                     ("motion_x", "<i4"), ("motion_y", "<i4"), ("motion_scale", "<u2")])



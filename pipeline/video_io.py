"""Opening a video safely: the frame index every backend shares, and the one resize they use.

`probe_video` opens the file with PyAV and reads its video packets without decoding them: the
container opens, holds a video stream of sane size, and every frame's presentation timestamp
and keyframe flag are known. That index (frames in presentation order) is what sampling picks
from, what both decode backends are checked against, and what codec-signal reading maps
decoded frames to. Probing with PyAV first also keeps files FFmpeg already rejects away from
decord, which can crash or hang on some of them.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pipeline.errors import UnsupportedVideo, VideoDecodeError, VideoLimitExceeded

log = logging.getLogger(__name__)

# Larger frames than this are refused before decoding: 8K UHD is 7680x4320.
MAX_SOURCE_SIDE_PX = 16384
MAX_SOURCE_PIXELS = 7680 * 4320


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video stream, with its frame index in presentation order.

    time_s: [N] float64, each frame's PTS in seconds relative to the first frame's PTS (sorted).
    pts: [N] int64, the raw PTS in `time_base` units (the key decoded frames are matched by).
    keyframe: [N] bool, packet keyframe flags (where a decoder can start).
    video_fps: average frame rate: (N - 1) / (time_s[-1] - time_s[0]), or the container's
        declared rate for 1-frame videos.
    duration_s: time_s[-1] plus one average frame interval.
    codec: the stream's codec as FFmpeg names it (h264, hevc, vp9, av1...).
    """

    path: str
    codec: str
    width: int
    height: int
    time_base: Fraction
    pts: np.ndarray
    time_s: np.ndarray
    keyframe: np.ndarray
    video_fps: float
    duration_s: float
    truncated: bool  # the demuxer hit corrupt or missing data before the end of the file

    @property
    def num_frames(self) -> int:
        return int(self.time_s.shape[0])


def check_path(path: str | Path) -> str:
    """Return `path` as a string, or raise VideoDecodeError if it is missing, a directory or empty."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise VideoDecodeError(f"{p}: no such file.")
    if os.path.isdir(p):
        raise VideoDecodeError(f"{p}: is a directory, not a video file.")
    if os.path.getsize(p) == 0:
        raise VideoDecodeError(f"{p}: the file is empty (0 bytes).")
    return p


def open_container(path: str) -> av.container.InputContainer:
    """av.open with FFmpeg's errors turned into one-sentence UnsupportedVideo / VideoDecodeError."""
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise UnsupportedVideo(f"{path}: not a video FFmpeg can read (unknown format, or a corrupt or truncated container).") from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodeError(f"{path}: cannot open the file ({e.__class__.__name__}: {_first_line(e)}).") from None


def video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first video stream, checked for a known decoder and a sane frame size."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        raise UnsupportedVideo(f"{path}: has no video stream (found {', '.join(kinds)} streams).")
    stream = container.streams.video[0]
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"{path}: the video stream has no valid frame size ({width}x{height}).")
    if max(width, height) > MAX_SOURCE_SIDE_PX or width * height > MAX_SOURCE_PIXELS:
        raise VideoLimitExceeded(
            f"{path}: frames of {width}x{height} exceed the {MAX_SOURCE_PIXELS} pixel / {MAX_SOURCE_SIDE_PX} px limit."
        )
    return stream


def codec_name(stream: av.video.stream.VideoStream) -> str:
    """FFmpeg's codec id name (av1, not the decoder's name libdav1d)."""
    codec = stream.codec_context.codec
    return str(getattr(codec, "canonical_name", None) or codec.name)


def probe_video(path: str | Path) -> VideoInfo:
    """Open `path`, check it holds a decodable video stream, and index its frames (no decoding).

    Raises VideoDecodeError (or a subclass) with one sentence when the file is not usable.
    """
    p = check_path(path)
    with open_container(p) as container:
        stream = video_stream(container, p)
        stream.thread_type = "NONE"
        pts_list: list[int] = []
        key_list: list[bool] = []
        truncated = False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    continue  # e.g. raw elementary streams; such frames have no timestamp to sample by
                pts_list.append(int(pts))
                key_list.append(bool(packet.is_keyframe))
        except av.error.FFmpegError as e:
            truncated = True
            log.warning("%s: demuxing stopped early (%s); using the %d frames before it", p, _first_line(e), len(pts_list))
        if not pts_list:
            raise VideoDecodeError(f"{p}: the video stream contains no frames with timestamps.")
        time_base = stream.time_base or Fraction(1, 90000)
        info_codec = codec_name(stream)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        declared_fps = float(stream.average_rate or stream.guessed_rate or 0) or None

    pts = np.asarray(pts_list, dtype=np.int64)
    order = np.argsort(pts, kind="stable")
    pts, keyframe = pts[order], np.asarray(key_list, dtype=bool)[order]
    pts, first = np.unique(pts, return_index=True)  # a duplicated PTS names one frame
    keyframe = keyframe[first]
    time_s = (pts - pts[0]).astype(np.float64) * float(time_base)
    span = float(time_s[-1])
    if len(pts) > 1 and span > 0:
        video_fps = (len(pts) - 1) / span
    else:
        video_fps = declared_fps or 1.0
    return VideoInfo(
        path=p,
        codec=info_codec,
        width=width,
        height=height,
        time_base=Fraction(time_base),
        pts=pts,
        time_s=time_s,
        keyframe=keyframe,
        video_fps=float(video_fps),
        duration_s=span + 1.0 / video_fps,
        truncated=truncated,
    )


def output_size(height: int, width: int, max_pixels: int | None) -> tuple[int, int]:
    """(out_h, out_w): the source size scaled down (never up), aspect ratio kept, h*w <= max_pixels."""
    if max_pixels is None or height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    out_h, out_w = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
    return out_h, out_w


def resize_rgb(frame: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 -> [out_h, out_w, 3] uint8 (antialiased bilinear; a copy-free no-op at equal size).

    The one resize every backend uses, so backends agree bit for bit after resizing too.
    """
    if frame.shape[:2] == tuple(out_hw):
        return frame
    img = Image.fromarray(frame).resize((out_hw[1], out_hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

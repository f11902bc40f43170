"""Synthetic test and demo videos, written with PyAV.

Two functions other areas reuse in their tests:

- `write_video(path, frames, fps, codec=...)`: encode any iterable of `[H, W, 3]` uint8 RGB
  frames, constant frame rate or with explicit per-frame timestamps (`vfr_pts`).
- `moving_square_video(path, codec, ...)`: a static textured background with one textured square
  moving a known distance per frame; returns the square's true top-left per frame, so tests can
  check where a codec (or a compression strategy) sees motion.

Frames are generated lazily, one at a time: a long 720p clip never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec name (as FFmpeg names the stream) -> (encoder, default pix_fmt, extra encoder options).
# Options keep the encoders quiet and fast; quality stays high enough that motion search is exact.
ENCODERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"preset": "veryfast", "crf": "18"}),
    "hevc": ("libx265", "yuv420p", {"preset": "ultrafast", "crf": "20", "x265-params": "log-level=error"}),
    "vp9": ("libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}),
    "av1": ("libsvtav1", "yuv420p", {"preset": "12", "crf": "30"}),
    "mpeg4": ("mpeg4", "yuv420p", {"qscale": "2"}),
    "mpeg2video": ("mpeg2video", "yuv420p", {"qscale": "2"}),
}

# Time base used for explicit timestamps: milliseconds are exact in every container we write.
_VFR_TIME_BASE = Fraction(1, 1000)


@dataclass(frozen=True)
class SquarePath:
    """Ground truth of `moving_square_video`: where the square is in each frame.

    top_left: [F, 2] int64 (x, y) of the square's top-left corner, in pixels, per frame.
    square_px: side of the square in pixels.
    width, height, fps: the video's size and frame rate.
    """

    top_left: np.ndarray
    square_px: int
    width: int
    height: int
    fps: float

    def mask(self, frame: int) -> np.ndarray:
        """[H, W] bool: pixels the square covers in `frame`."""
        x, y = (int(v) for v in self.top_left[frame])
        m = np.zeros((self.height, self.width), dtype=bool)
        m[max(y, 0) : max(y + self.square_px, 0), max(x, 0) : max(x + self.square_px, 0)] = True
        return m


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    codec: str = "h264",
    *,
    gop: int | None = None,
    pix_fmt: str | None = None,
    bframes: int | None = None,
    vfr_pts: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
) -> int:
    """Encode RGB frames to `path` (container from the suffix: .mp4, .mkv, .webm, .avi...).

    frames: iterable of [H, W, 3] uint8 RGB, all the same size (even sizes for yuv420p).
    fps: nominal frame rate; with `vfr_pts` it is only the stream's declared average rate.
    codec: a key of `ENCODERS` ("h264", "hevc", "vp9", "av1", "mpeg4", "mpeg2video").
    gop: keyframe interval in frames (encoder default when None).
    bframes: max consecutive B-frames (encoder default when None; 0 disables them).
    vfr_pts: per-frame presentation time in seconds (strictly increasing), for a
        variable-frame-rate video; stored with millisecond precision.
    Returns the number of frames written.
    """
    if codec not in ENCODERS:
        raise ValueError(f"write_video: unknown codec {codec!r}; known: {sorted(ENCODERS)}")
    encoder, default_pix_fmt, default_opts = ENCODERS[codec]
    opts = dict(default_opts)
    opts.update(options or {})
    rate = Fraction(fps).limit_denominator(1001)
    time_base = _VFR_TIME_BASE if vfr_pts is not None else 1 / rate
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame_rgb in frames:
            frame_rgb = np.ascontiguousarray(frame_rgb, dtype=np.uint8)
            if stream is None:
                height, width = frame_rgb.shape[:2]
                stream = container.add_stream(encoder, rate=rate)
                stream.width, stream.height = width, height
                stream.pix_fmt = pix_fmt or default_pix_fmt
                if gop is not None:
                    stream.codec_context.gop_size = gop
                if bframes is not None:
                    stream.codec_context.max_b_frames = bframes
                    if codec == "h264":
                        opts["bf"] = str(bframes)
                if codec == "hevc" and (gop is not None or bframes is not None):
                    extra = [f"keyint={gop}", f"min-keyint={gop}"] if gop is not None else []
                    extra += [f"bframes={bframes}"] if bframes is not None else []
                    opts["x265-params"] = ":".join([opts["x265-params"], *extra])
                # Both time bases must be set: the codec's alone leaves mp4 picking a rounded one.
                stream.codec_context.time_base = time_base
                stream.time_base = time_base
                stream.codec_context.options = opts
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            if vfr_pts is not None:
                if count >= len(vfr_pts):
                    raise ValueError(f"write_video: more frames than vfr_pts entries ({len(vfr_pts)})")
                frame.pts = round(vfr_pts[count] / _VFR_TIME_BASE)
            else:
                frame.pts = count
            # Not stream.time_base: the muxer replaces it (mp4: 1/12288) once the header is written.
            frame.time_base = time_base
            container.mux(stream.encode(frame))
            count += 1
        if stream is None:
            raise ValueError("write_video: no frames given")
        container.mux(stream.encode(None))
    return count


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """[H, W, 3] uint8: a static background with features at several scales.

    Smooth gradients alone give the motion search nothing to lock onto and white noise is
    incompressible; a sum of random-phase sinusoids plus 8 px blocks has structure everywhere.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            fx, fy = rng.uniform(0.02, 0.2, size=2)
            img[..., c] += np.sin(fx * xx + fy * yy + rng.uniform(0, 2 * np.pi))
    blocks = rng.uniform(-1, 1, size=((height + 7) // 8, (width + 7) // 8, 3)).astype(np.float32)
    img += np.kron(blocks, np.ones((8, 8, 1), np.float32))[:height, :width]
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
    return (40 + 160 * img).astype(np.uint8)


def square_pattern(square_px: int, seed: int = 1) -> np.ndarray:
    """[S, S, 3] uint8: bright random 4 px blocks, distinct from the darker background.

    Textured, so the encoder must move its blocks with the square (a flat square's interior
    matches itself at any offset and would be coded with zero motion), and not periodic, so a
    motion search cannot lock onto a wrong offset one period away.
    """
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, size=((square_px + 3) // 4, (square_px + 3) // 4, 3)).astype(np.float32)
    img = np.kron(blocks, np.ones((4, 4, 1), np.float32))[:square_px, :square_px]
    return (90 + 165 * img).astype(np.uint8)


def moving_square_frames(path: SquarePath, background: np.ndarray, pattern: np.ndarray) -> Iterator[np.ndarray]:
    """Yield [H, W, 3] uint8 frames: `pattern` pasted on `background` at each `path.top_left`."""
    s = path.square_px
    for x, y in path.top_left:
        frame = background.copy()
        x0, y0 = max(int(x), 0), max(int(y), 0)
        x1, y1 = min(int(x) + s, path.width), min(int(y) + s, path.height)
        if x1 > x0 and y1 > y0:
            frame[y0:y1, x0:x1] = pattern[y0 - int(y) : y1 - int(y), x0 - int(x) : x1 - int(x)]
        yield frame


def moving_square_video(
    path: str | Path,
    codec: str = "h264",
    *,
    width: int = 128,
    height: int = 96,
    num_frames: int = 24,
    fps: float = 24.0,
    square_px: int = 32,
    step_px: tuple[int, int] = (4, 0),
    start_px: tuple[int, int] = (0, 0),
    background: str = "texture",
    seed: int = 0,
    **write_kwargs,
) -> SquarePath:
    """Write a video of one square moving `step_px` = (dx, dy) pixels per frame; return its path.

    background: "texture" (see `texture`) or "gray" (flat 128, for tests that want no detail).
    The square starts at `start_px` (x, y); it may leave the frame, which is drawn clipped.
    `write_kwargs` go to `write_video` (gop, bframes, pix_fmt, vfr_pts, options).
    """
    if background == "texture":
        bg = texture(height, width, seed)
    elif background == "gray":
        bg = np.full((height, width, 3), 128, np.uint8)
    else:
        raise ValueError(f"moving_square_video: background must be 'texture' or 'gray', got {background!r}")
    steps = np.arange(num_frames, dtype=np.int64)[:, None]
    top_left = np.asarray(start_px, np.int64)[None, :] + steps * np.asarray(step_px, np.int64)[None, :]
    truth = SquarePath(top_left=top_left, square_px=square_px, width=width, height=height, fps=float(fps))
    write_video(path, moving_square_frames(truth, bg, square_pattern(square_px, seed + 1)), fps, codec, **write_kwargs)
    return truth

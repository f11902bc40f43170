"""Pixels for the synthetic video QA set: textured backgrounds, shape sprites, a scene renderer.

Pure numpy and no randomness of its own: every random choice is made in `pipeline/synth_scenes.py`
and arrives here as numbers in a `Scene`, so one scene always renders to the same frames.

Rendering is vectorised over frames: the background is one gather from a canvas a little
larger than the frame (slow pans are integer crops of it), and each shape is one fancy-index
assignment over all the frames it is visible in. No per-pixel Python loop.

Colour rules the question families rely on (and the tests check on rendered frames):
- backgrounds are low-saturation greys (max - min channel <= 30): "is this pixel a shape?" is a
  saturation test;
- a shape's pixels are its palette colour times a shade in {0.8, 1.0} (a 4 px checker that moves
  with the shape, so a video codec's motion search locks onto the interior, not only the edges).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SHAPE_KINDS: tuple[str, ...] = ("square", "circle", "triangle", "cross")

# Checker shading inside a shape: strong enough to give the encoder texture, weak enough that
# the hue (what the colour family asks about) never changes.
_SHADE_DARK = 0.8
_CHECKER_PX = 4


@dataclass(frozen=True)
class Track:
    """One shape through the video.

    kind: a `SHAPE_KINDS` name; rgb: its palette colour (0-255 each); size: sprite side, px.
    top_left: [T, 2] int64 (x, y) of the sprite's top-left per frame; always fully inside the frame.
    visible: [T] bool, frames in which the shape is drawn.
    """

    kind: str
    rgb: tuple[int, int, int]
    size: int
    top_left: np.ndarray
    visible: np.ndarray


@dataclass(frozen=True)
class Background:
    """A luminance plaid over a tinted grey, optionally panning.

    base_rgb: the grey (low saturation). gratings: (fx, fy, phase, amplitude) per sinusoid,
    frequencies in cycles per pixel. pan_px_per_frame: (dx, dy) camera motion; the content moves
    by minus this per frame. Integer crops of a larger canvas, so a pan of 0.5 px/frame moves 1 px
    every other frame.
    """

    base_rgb: tuple[int, int, int]
    gratings: tuple[tuple[float, float, float, float], ...]
    pan_px_per_frame: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Scene:
    """Everything `render` needs: size, frame count, background, shapes in drawing order."""

    frames: int
    size: int
    background: Background
    tracks: tuple[Track, ...]


@functools.lru_cache(maxsize=64)
def sprite(kind: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of a `size` x `size` shape: (ys [P] int64, xs [P] int64, shade [P] float32).

    Offsets are relative to the sprite's top-left. Cached and read-only.
    """
    if kind not in SHAPE_KINDS:
        raise ValueError(f"sprite: unknown shape kind {kind!r}; known: {list(SHAPE_KINDS)}")
    if size < 4:
        raise ValueError(f"sprite: size must be >= 4 px, got {size}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c = size / 2.0
    if kind == "square":
        mask = np.ones((size, size), bool)
    elif kind == "circle":
        mask = (yy - c) ** 2 + (xx - c) ** 2 <= c * c
    elif kind == "triangle":
        # Apex at the top centre, base along the bottom row: half-width grows linearly with y.
        mask = np.abs(xx - c) <= yy / 2.0
    else:  # cross: a plus sign with arms a third of the side thick
        arm = size / 6.0
        mask = (np.abs(xx - c) <= arm) | (np.abs(yy - c) <= arm)
    ys, xs = (a.astype(np.int64) for a in np.nonzero(mask))
    checker = ((ys // _CHECKER_PX + xs // _CHECKER_PX) % 2).astype(np.float32)
    shade = np.where(checker > 0, _SHADE_DARK, 1.0).astype(np.float32)
    for a in (ys, xs, shade):
        a.setflags(write=False)
    return ys, xs, shade


def sprite_mask(kind: str, size: int) -> np.ndarray:
    """[size, size] bool: the shape's silhouette (for tests and shape classification)."""
    ys, xs, _ = sprite(kind, size)
    mask = np.zeros((size, size), bool)
    mask[ys, xs] = True
    return mask


def render_background(bg: Background, frames: int, size: int) -> np.ndarray:
    """[T, S, S, 3] uint8 background frames (a fresh, writable array)."""
    dx, dy = bg.pan_px_per_frame
    t = np.arange(frames, dtype=np.float64)
    off_x = np.round(t * dx).astype(np.int64)
    off_y = np.round(t * dy).astype(np.int64)
    off_x -= off_x.min()
    off_y -= off_y.min()
    ch, cw = size + int(off_y.max()), size + int(off_x.max())
    yy = np.arange(ch, dtype=np.float64)
    xx = np.arange(cw, dtype=np.float64)
    lum = np.zeros((ch, cw), np.float32)
    for fx, fy, phase, amp in bg.gratings:
        # cos(u + v) = cos u cos v - sin u sin v: two outer products instead of a cosine per pixel.
        u = 2 * np.pi * fx * xx + phase
        v = 2 * np.pi * fy * yy
        lum += (amp * np.cos(v))[:, None].astype(np.float32) * np.cos(u)[None, :].astype(np.float32)
        lum -= (amp * np.sin(v))[:, None].astype(np.float32) * np.sin(u)[None, :].astype(np.float32)
    canvas = (np.asarray(bg.base_rgb, np.float32)[None, None, :] + lum[..., None]).clip(0, 255).astype(np.uint8)
    if not off_x.any() and not off_y.any():
        return np.broadcast_to(canvas[:size, :size], (frames, size, size, 3)).copy()
    # One strided view of every crop, then a gather over the frame axis only: a 3-index fancy
    # gather over all pixels is ~10x slower.
    windows = np.lib.stride_tricks.sliding_window_view(canvas, (size, size), axis=(0, 1))  # [h, w, 3, S, S]
    return np.ascontiguousarray(windows[off_y, off_x].transpose(0, 2, 3, 1))


def draw_track(frames: np.ndarray, track: Track) -> None:
    """Paint `track` into `frames` [T, S, S, 3] uint8 in place, over all its visible frames at once."""
    ys, xs, shade = sprite(track.kind, track.size)
    t = np.flatnonzero(track.visible)
    if t.size == 0:
        return
    values = np.clip(np.asarray(track.rgb, np.float32)[None, :] * shade[:, None], 0, 255).astype(np.uint8)  # [P, 3]
    rows = track.top_left[t, 1, None] + ys[None, :]  # [n, P]
    cols = track.top_left[t, 0, None] + xs[None, :]  # [n, P]
    frames[t[:, None], rows, cols] = values[None, :, :]


def render(scene: Scene) -> np.ndarray:
    """[T, S, S, 3] uint8 RGB frames of `scene`; shapes drawn in `scene.tracks` order."""
    frames = render_background(scene.background, scene.frames, scene.size)
    for track in scene.tracks:
        if track.top_left.shape != (scene.frames, 2) or track.visible.shape != (scene.frames,):
            raise ValueError(
                f"render: track {track.kind} has top_left {track.top_left.shape} / visible {track.visible.shape}, "
                f"expected ({scene.frames}, 2) / ({scene.frames},)"
            )
        lo, hi = track.top_left.min(), track.top_left.max() + track.size
        if lo < 0 or hi > scene.size:
            raise ValueError(f"render: track {track.kind} leaves the {scene.size} px frame (extent {lo}..{hi})")
        draw_track(frames, track)
    return frames

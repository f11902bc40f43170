"""Scene builders of the synthetic video QA set: one function per question family.

A builder takes (rng, cfg, answer) and returns (tracks, words, allow_pan): the shapes to draw
(first = the one the question is about), the words that fill the family's template, and whether
the background may pan. The answer is chosen *before* the scene (see `pipeline/synthqa.py`), and
the builder makes a video in which that answer is the true one. Shapes never overlap in a frame
they share (`_GAP_PX` clearance), so every object stays countable and its colour readable.
`cfg` is a `pipeline.synthqa.SynthConfig` (frames, size, shape_px, small_px, travel, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from encoders.errors import BadRequest
from pipeline.synth_render import SHAPE_KINDS, Background, Track

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 230),
    "yellow": (230, 210, 20),
    "cyan": (20, 200, 210),
    "magenta": (210, 30, 200),
}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
DIRECTION_XY: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUADRANTS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")

_GAP_PX = 2  # minimum clearance between two shapes visible in the same frame


@dataclass(frozen=True)
class Family:
    """A question family: its template, closed answers (= the options, in this order), builder."""

    name: str
    template: str  # words separated by single spaces; {colour} {shape} {colour2} {shape2} placeholders
    answers: tuple[str, ...]
    build: Callable  # (rng, cfg, answer) -> (tracks, words, allow_pan)


FAMILIES: dict[str, Family] = {}


def register_family(name: str, template: str, answers: tuple[str, ...]):
    """Decorator: register a scene builder as question family `name`."""

    def deco(fn):
        if name in FAMILIES:
            raise ValueError(f"register_family: {name!r} registered twice")
        FAMILIES[name] = Family(name, template, tuple(answers), fn)
        return fn

    return deco


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise BadRequest(f"synthqa: unknown question family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


# ---------------------------------------------------------------- trajectories


def _pick(rng: np.random.Generator, names, k: int, first: str | None = None) -> list[str]:
    """k distinct names; `first` (if given) is element 0, the rest random."""
    rest = [n for n in names if n != first]
    chosen = [str(n) for n in rng.permutation(rest)[: k - (first is not None)]]
    return ([first] if first is not None else []) + chosen


@functools.lru_cache(maxsize=16)
def _frame_times(frames: int) -> np.ndarray:
    t = np.arange(frames, dtype=np.float64)
    t.setflags(write=False)
    return t


@functools.lru_cache(maxsize=16)
def _ALL_TRUE(frames: int) -> np.ndarray:  # noqa: N802 - a cached constant
    v = np.ones(frames, bool)
    v.setflags(write=False)
    return v


def _choice(rng: np.random.Generator, names) -> str:
    """One of `names`, uniformly (rng.choice converts to an array first: ~10x slower here)."""
    return names[int(rng.integers(len(names)))]


def _track(cfg, rng, kind, colour, size, start, end, move=None, show=None) -> Track:
    """A Track going linearly from `start` to `end` (top-left (x, y), px) during frames move=(m0, m1).

    Before m0 it sits at start, after m1 at end; visible in frames show=[a, d) (default all).
    Its colour is the palette colour plus a per-shape jitter of +-cfg.colour_jitter.
    """
    T = cfg.frames
    m0, m1 = move if move is not None else (0, T - 1)
    t = _frame_times(T)
    (x0, y0), (x1, y1) = start, end
    if start == end:  # most shapes are static: skip the interpolation
        top_left = np.full((T, 2), (round(x0), round(y0)), np.int64)
    else:
        # ufuncs rather than np.clip: this runs ~10 times per video and np.clip's wrapper dominates.
        frac = np.minimum(np.maximum((t - m0) / max(m1 - m0, 1), 0.0), 1.0)
        top_left = np.empty((T, 2), np.int64)
        top_left[:, 0] = np.rint(x0 + frac * (x1 - x0))
        top_left[:, 1] = np.rint(y0 + frac * (y1 - y0))
    visible = _ALL_TRUE(T) if show is None else (t >= show[0]) & (t < show[1])
    # One draw for the three channel jitters (a base-(2j+1) number): rng.integers(size=3) is ~4x slower.
    j = cfg.colour_jitter
    code, rgb = int(rng.integers((2 * j + 1) ** 3)), []
    for v in COLOURS[colour]:
        code, dv = divmod(code, 2 * j + 1)
        rgb.append(min(255, max(0, v + dv - j)))
    rgb = tuple(rgb)
    return Track(kind=kind, rgb=rgb, size=size, top_left=top_left, visible=visible)


def _travel_px(rng, cfg, size, scale: float = 1.0) -> float:
    lo, hi = cfg.travel
    return min(float(rng.uniform(lo, hi)) * scale * cfg.size, cfg.size - size)


def _linear_path(rng, cfg, size, direction: str, travel: float):
    """(start, end) top-left points of a move of `travel` px towards `direction`, inside the frame."""
    dx, dy = DIRECTION_XY[direction]
    span = cfg.size - size
    along = float(rng.uniform(0, span - travel))
    across = float(rng.uniform(0, span))
    if dx:
        x0 = along if dx > 0 else span - along
        return (x0, across), (x0 + dx * travel, across)
    y0 = along if dy > 0 else span - along
    return (across, y0), (across, y0 + dy * travel)


def _static_at(rng, cfg, size):
    p = tuple(float(v) for v in rng.uniform(0, cfg.size - size, size=2))
    return p, p


def _in_quadrant(rng, cfg, size, quadrant: str) -> tuple[float, float]:
    """A top-left point that keeps a `size` px shape entirely inside `quadrant`."""
    half = cfg.size // 2
    vertical, horizontal = quadrant.split("-")
    return (
        float((horizontal == "right") * half + rng.uniform(0, half - size)),
        float((vertical == "bottom") * half + rng.uniform(0, half - size)),
    )


def _clear(track: Track, placed: list[Track]) -> bool:
    """True when `track` keeps `_GAP_PX` clearance from every placed shape in every shared frame."""
    for other in placed:
        reach = (track.size + other.size) / 2.0 + _GAP_PX
        d = np.abs(track.top_left - other.top_left + (track.size - other.size) / 2.0)  # [T, 2] centre distance
        near = d < reach
        if (near[:, 0] & near[:, 1] & track.visible & other.visible).any():
            return False
    return True


class Crowded(Exception):
    """A shape found no free trajectory; the caller draws the scene again (same generator)."""


def _place(placed: list[Track], make: Callable[[], Track], tries: int = 60) -> Track:
    for _ in range(tries):
        track = make()
        if _clear(track, placed):
            placed.append(track)
            return track
    raise Crowded


def _shape(rng, cfg, colour, kind=None, move_prob=0.5, travel_scale=1.0, avoid=None, transient_prob=0.0, show=None) -> Track:
    """A full-size shape: moving all along (prob `move_prob`, never towards `avoid`) or static,
    and, if static, transient (visible for >= half the video) with prob `transient_prob`."""
    kind = kind or _choice(rng, SHAPE_KINDS)
    if rng.random() < move_prob:
        d = _choice(rng, [d for d in DIRECTIONS if d != avoid])
        path = _linear_path(rng, cfg, cfg.shape_px, d, _travel_px(rng, cfg, cfg.shape_px, travel_scale))
        return _track(cfg, rng, kind, colour, cfg.shape_px, *path, show=show)
    if show is None and rng.random() < transient_prob:
        length = int(rng.integers(cfg.frames // 2, cfg.frames))
        a = int(rng.integers(0, cfg.frames - length + 1))
        show = (a, a + length)
    return _track(cfg, rng, kind, colour, cfg.shape_px, *_static_at(rng, cfg, cfg.shape_px), show=show)


# ---------------------------------------------------------------- families


@register_family("direction", "which way does the {colour} {shape} move ?", DIRECTIONS)
def _direction(rng, cfg, answer):
    colours = _pick(rng, COLOURS, 1 + int(rng.integers(0, 3)))
    kind = _choice(rng, SHAPE_KINDS)
    path = _linear_path(rng, cfg, cfg.shape_px, answer, _travel_px(rng, cfg, cfg.shape_px))
    placed = [_track(cfg, rng, kind, colours[0], cfg.shape_px, *path)]
    for c in colours[1:]:
        _place(placed, lambda: _shape(rng, cfg, c, avoid=answer, transient_prob=0.5))
    return placed, {"colour": colours[0], "shape": kind}, True


@register_family("moved", "which shape moves ?", SHAPE_KINDS)
def _moved(rng, cfg, answer):
    n = int(rng.integers(2, 5))
    kinds = _pick(rng, SHAPE_KINDS, n, first=answer)
    colours = _pick(rng, COLOURS, n)
    placed = [_shape(rng, cfg, colours[0], kinds[0], move_prob=1.0)]
    for k, c in zip(kinds[1:], colours[1:]):
        _place(placed, lambda: _shape(rng, cfg, c, k, move_prob=0.0))
    return placed, {}, True


@register_family("order", "does the {colour} {shape} appear before or after the {colour2} {shape2} ?", ("before", "after"))
def _order(rng, cfg, answer):
    T = cfg.frames
    gap = max(2, (T // 4 + 1) // 2 * 2)  # appearances >= a quarter of the video apart, in whole tubelets
    evens = range(0, T - gap + 1, 2)
    pairs = [(a, b) for a in evens for b in evens if b - a >= gap]
    early, late = pairs[int(rng.integers(len(pairs)))]
    n = 2 + int(rng.integers(0, 2))  # the two named shapes, maybe one always-visible distractor
    colours = _pick(rng, COLOURS, n)
    kinds = [_choice(rng, SHAPE_KINDS) for _ in range(n)]
    appear = (early, late) if answer == "before" else (late, early)
    placed: list[Track] = []
    for i in range(n):
        show = (appear[i], T) if i < 2 else None
        _place(placed, lambda: _shape(rng, cfg, colours[i], kinds[i], travel_scale=0.5, show=show))
    return placed, {"colour": colours[0], "shape": kinds[0], "colour2": colours[1], "shape2": kinds[1]}, True


@register_family("count", "how many shapes are there ?", COUNT_WORDS)
def _count(rng, cfg, answer):
    placed: list[Track] = []
    for c in _pick(rng, COLOURS, COUNT_WORDS.index(answer) + 1):
        _place(placed, lambda: _shape(rng, cfg, c))
    return placed, {}, True


@register_family("colour", "what colour is the moving shape ?", tuple(COLOURS))
def _colour(rng, cfg, answer):
    colours = _pick(rng, COLOURS, 3 + int(rng.integers(0, 2)), first=answer)
    path = _linear_path(rng, cfg, cfg.small_px, _choice(rng, DIRECTIONS), _travel_px(rng, cfg, cfg.small_px))
    placed = [_track(cfg, rng, _choice(rng, SHAPE_KINDS), answer, cfg.small_px, *path)]
    # One static distractor is as small as the mover, so "the smallest shape" does not answer:
    # only motion does.
    _place(placed, lambda: _track(cfg, rng, _choice(rng, SHAPE_KINDS), colours[1], cfg.small_px, *_static_at(rng, cfg, cfg.small_px)))
    for c in colours[2:]:
        _place(placed, lambda: _shape(rng, cfg, c, move_prob=0.0))
    return placed, {}, False  # static background: the small mover is the only motion in the video


@register_family("position", "where is the {colour} {shape} at the end ?", QUADRANTS)
def _position(rng, cfg, answer):
    T = cfg.frames
    colours = _pick(rng, COLOURS, 1 + int(rng.integers(0, 3)))
    kind = _choice(rng, SHAPE_KINDS)
    start_q = _choice(rng, [q for q in QUADRANTS if q != answer])
    start, end = _in_quadrant(rng, cfg, cfg.shape_px, start_q), _in_quadrant(rng, cfg, cfg.shape_px, answer)
    move = (int(rng.integers(0, T // 4 + 1)), int(rng.integers(3 * T // 4, T)))  # still moving after 3/4 of the video
    placed = [_track(cfg, rng, kind, colours[0], cfg.shape_px, start, end, move=move)]
    for c in colours[1:]:
        _place(placed, lambda: _shape(rng, cfg, c, transient_prob=0.5))
    return placed, {"colour": colours[0], "shape": kind}, True


@register_family("half", "in which half does the {colour} {shape} move ?", ("first", "second"))
def _half(rng, cfg, answer):
    T = cfg.frames
    colours = _pick(rng, COLOURS, 1 + int(rng.integers(0, 3)))
    kind = _choice(rng, SHAPE_KINDS)
    move = (0, T // 2 - 1) if answer == "first" else (T // 2, T - 1)
    path = _linear_path(rng, cfg, cfg.shape_px, _choice(rng, DIRECTIONS), _travel_px(rng, cfg, cfg.shape_px))
    placed = [_track(cfg, rng, kind, colours[0], cfg.shape_px, *path, move=move)]
    for c in colours[1:]:  # distractors are static or move all along, never in one half only
        _place(placed, lambda: _shape(rng, cfg, c))
    return placed, {"colour": colours[0], "shape": kind}, True


def make_background(rng, cfg, allow_pan: bool) -> Background:
    """A tinted grey (channel spread <= 24) under a 3-grating luminance plaid (<= 36 levels)."""
    grey = int(rng.integers(70, 150))
    base = tuple(int(grey + v) for v in rng.integers(-12, 13, size=3))
    gratings = []
    for _ in range(3):
        freq, angle = float(rng.uniform(1 / 40, 1 / 8)), float(rng.uniform(0, np.pi))
        gratings.append((freq * np.cos(angle), freq * np.sin(angle), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(6, 12))))
    pan = (0.0, 0.0)
    if allow_pan and rng.random() < cfg.pan_prob:
        speed, angle = float(rng.uniform(0.3, 1.0)) * cfg.max_pan_px, float(rng.uniform(0, 2 * np.pi))
        pan = (float(speed * np.cos(angle)), float(speed * np.sin(angle)))
    return Background(base_rgb=base, gratings=tuple(gratings), pan_px_per_frame=pan)

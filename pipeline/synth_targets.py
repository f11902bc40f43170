"""Per-cell ground truth of a synthetic scene, for auxiliary training losses of the demo model.

`cell_targets(scene, cell_px, tubelet)` -> int64 arrays [T', H', W'] on the LLM grid (one entry per
merged cell of a tubelet): which colour, which shape kind and which motion sits in each cell.
A shape belongs to the cell holding its centre, averaged over the tubelet's frames in which it is
visible; where two shapes share a cell the one drawn last (on top) wins. Pure numpy, no randomness:
the targets follow from the `Scene` alone, as the pixels do.

Classes (0 always means "no shape here"):
- colour: 1 + index in `COLOURS` (the palette colour nearest the track's jittered rgb);
- kind: 1 + index in `SHAPE_KINDS`;
- motion: 1 static, then 2 + index in `DIRECTIONS` (left, right, up, down) by the larger axis of
  the centre's displacement from the tubelet's first to its last visible frame (>= `min_move_px`).
- appear: 1 + the first tubelet in which the shape is visible at all (capped at `MAX_TUBELETS` - 1),
  the same in every tubelet of that shape: what the `order` family compares.

Why: the demo model's question families ask about colour, kind, motion, count, position and order
of shapes. Supervising each visual token with what is in its cell gives the small encoder a dense
signal from the first step, where the answer word alone is a few bits per video (`train_demo`).
"""

from __future__ import annotations

import numpy as np

from pipeline.synth_render import SHAPE_KINDS, Scene
from pipeline.synth_scenes import COLOURS, DIRECTIONS

MAX_TUBELETS = 8  # appear classes: first visible tubelet 0..7 (later ones share the last class)
TARGET_CLASSES: dict[str, int] = {"colour": 1 + len(COLOURS), "kind": 1 + len(SHAPE_KINDS), "motion": 2 + len(DIRECTIONS),
                                  "appear": 1 + MAX_TUBELETS}
_PALETTE = np.array(list(COLOURS.values()), np.int64)


def nearest_colour(rgb) -> int:
    """Index in `COLOURS` of the palette colour nearest `rgb` (L1)."""
    return int(np.abs(_PALETTE - np.asarray(rgb, np.int64)).sum(1).argmin())


def motion_class(dx: float, dy: float, min_move_px: float) -> int:
    """1 static, else 2 + index of left/right/up/down by the dominant axis (image y grows down)."""
    if max(abs(dx), abs(dy)) < min_move_px:
        return 1
    if abs(dx) >= abs(dy):
        return 2 + DIRECTIONS.index("right" if dx > 0 else "left")
    return 2 + DIRECTIONS.index("down" if dy > 0 else "up")


def cell_targets(scene: Scene, cell_px: int = 28, tubelet: int = 2, min_move_px: float = 1.0) -> dict[str, np.ndarray]:
    """{"colour", "kind", "motion", "appear"} -> int64 [T // tubelet, size // cell_px, size // cell_px]."""
    if scene.frames % tubelet or scene.size % cell_px:
        raise ValueError(f"cell_targets: {scene.frames} frames of {scene.size} px do not tile into "
                         f"{tubelet}-frame tubelets of {cell_px} px cells")
    shape = (scene.frames // tubelet, scene.size // cell_px, scene.size // cell_px)
    out = {name: np.zeros(shape, np.int64) for name in TARGET_CLASSES}
    for track in scene.tracks:  # drawing order: later tracks overwrite earlier ones, as in the pixels
        centres = track.top_left.astype(np.float64) + track.size / 2.0  # [T, 2] (x, y)
        colour, kind = 1 + nearest_colour(track.rgb), 1 + SHAPE_KINDS.index(track.kind)
        shown = np.flatnonzero(track.visible)
        appear = 1 + min(int(shown[0]) // tubelet, MAX_TUBELETS - 1) if shown.size else 0
        for t in range(shape[0]):
            frames = np.arange(t * tubelet, (t + 1) * tubelet)
            seen = frames[track.visible[frames]]
            if seen.size == 0:
                continue
            x, y = centres[seen].mean(0)
            h, w = min(int(y // cell_px), shape[1] - 1), min(int(x // cell_px), shape[2] - 1)
            dx, dy = centres[seen[-1]] - centres[seen[0]]
            out["colour"][t, h, w], out["kind"][t, h, w] = colour, kind
            out["motion"][t, h, w] = motion_class(dx, dy, min_move_px)
            out["appear"][t, h, w] = appear
    return out

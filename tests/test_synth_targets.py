"""Per-cell ground truth of synthetic scenes (`pipeline/synth_targets.py`), checked against the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.synth_render import SHAPE_KINDS
from pipeline.synth_scenes import COLOURS, DIRECTION_XY, DIRECTIONS
from pipeline.synth_targets import TARGET_CLASSES, cell_targets, motion_class, nearest_colour
from pipeline.synthqa import SynthConfig, make_item, split_seed

CFG = SynthConfig(frames=8, size=112)
PALETTE = list(COLOURS.values())


def test_motion_class_follows_the_dominant_axis():
    assert motion_class(0.4, -0.3, 1.0) == 1
    assert [motion_class(*map(float, DIRECTION_XY[d]), 1.0) for d in DIRECTIONS] == [2, 3, 4, 5]
    assert motion_class(5.0, -3.0, 1.0) == 2 + DIRECTIONS.index("right")
    assert nearest_colour((225, 40, 22)) == list(COLOURS).index("red")


@pytest.mark.parametrize("index", range(14))
def test_each_labelled_cell_holds_its_shapes_colour(index):
    item = make_item(split_seed("validation", index), CFG)
    cells = cell_targets(item.scene)
    assert set(cells) == set(TARGET_CLASSES) and cells["colour"].shape == (4, 4, 4)
    for name, n in TARGET_CLASSES.items():
        assert 0 <= cells[name].min() and cells[name].max() < n
    assert ((cells["colour"] > 0) == (cells["kind"] > 0)).all() and ((cells["colour"] > 0) == (cells["motion"] > 0)).all()
    frames = item.frames.astype(np.int64)
    for t, h, w in zip(*np.nonzero(cells["colour"])):
        patch = frames[2 * t : 2 * t + 2, 28 * h : 28 * h + 28, 28 * w : 28 * w + 28].reshape(-1, 3)
        want = np.array(PALETTE[cells["colour"][t, h, w] - 1])
        # the checker shades a shape's colour by 0.8 or 1.0; +-12 jitter per channel
        close = [np.abs(patch - s * want).max(1) <= 14 + 0.2 * 255 * (s < 1) for s in (1.0, 0.8)]
        assert (close[0] | close[1]).sum() >= 20, (item.family, t, h, w)


def test_counts_and_motion_agree_with_the_questions():
    seen = {"count": 0, "direction": 0, "moved": 0}
    for index in range(70):
        item = make_item(split_seed("validation", index), CFG)
        cells = cell_targets(item.scene)
        if item.family == "count":
            # every shape in a count scene is visible throughout: one labelled cell per shape per tubelet
            assert ((cells["colour"] > 0).sum((1, 2)) == len(item.scene.tracks)).all()
            assert len(item.scene.tracks) == ["one", "two", "three", "four"].index(item.answer) + 1
        elif item.family == "direction":
            # the moving cells include the asked shape moving in the answer's direction
            motions = set(cells["motion"][cells["motion"] > 1].tolist())
            assert 2 + DIRECTIONS.index(item.answer) in motions
        elif item.family == "moved":
            moving = cells["kind"][cells["motion"] > 1]
            assert set(moving.tolist()) == {1 + SHAPE_KINDS.index(item.answer)}
        else:
            continue
        seen[item.family] += 1
    assert min(seen.values()) >= 9


def test_tiling_must_fit():
    with pytest.raises(ValueError, match="do not tile"):
        cell_targets(make_item(split_seed("validation", 0), CFG).scene, cell_px=30)


def test_appear_labels_answer_the_order_questions():
    """`order` asks whether one named shape appears before the other: the appear labels of the two
    shapes' cells (first visible tubelet + 1, the same in every tubelet of a shape) must say so, and
    no cell of a shape is labelled before the shape is visible."""
    checked = 0
    for index in range(20):
        item = make_item(split_seed("validation", index), CFG, family="order", answer=("before", "after")[index % 2])
        cells = cell_targets(item.scene)
        first = [int(np.flatnonzero(tr.visible)[0]) // 2 + 1 for tr in item.scene.tracks]
        for track, appear in zip(item.scene.tracks, first):
            colour = 1 + PALETTE.index(min(PALETTE, key=lambda c: sum(abs(a - b) for a, b in zip(c, track.rgb))))
            labelled = cells["appear"][cells["colour"] == colour]
            assert set(labelled.tolist()) == {appear}
            assert not (cells["colour"][: appear - 1] == colour).any()
        a, b = first[0], first[1]
        assert (a < b) == (item.answer == "before") and a != b
        checked += 1
    assert checked == 20 and TARGET_CLASSES["appear"] == 9

"""Synthetic video QA (pipeline/synthqa.py, synth_scenes.py, synth_render.py, synth_dataset.py).

Answers are checked on the rendered pixels, never only against the generator's metadata: shape
pixels are found by saturation (backgrounds are greys), their colour by hue, their shape by
silhouette, and direction / order / position / timing from per-colour centroids over frames.
"""

from __future__ import annotations

import json
from collections import Counter

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.errors import BadRequest, VidsieveError
from pipeline import cli
from pipeline.synth_render import SHAPE_KINDS, Background, render_background, sprite_mask
from pipeline.synth_scenes import COLOURS, FAMILIES, QUADRANTS
from pipeline.synthqa import (
    SPLITS,
    SynthConfig,
    family_and_answer,
    iter_split,
    make_item,
    make_scene,
    seed_split,
    split_item,
    split_seed,
    vocabulary,
    write_dataset,
)

CFG8 = SynthConfig(frames=8)
CFG16 = SynthConfig(frames=16)
_SAT = 80  # shape pixels have channel spread >= ~120, backgrounds <= 24
_MOVE_PX = 3.0


# ---------------------------------------------------------------- reading answers off pixels


def colour_masks(frames: np.ndarray) -> dict[str, np.ndarray]:
    """{colour: [T, H, W] bool} for every palette colour with pixels in the video."""
    f = frames.astype(np.float32)
    shape_px = (f.max(-1) - f.min(-1)) > _SAT
    hue = f / np.maximum(f.max(-1, keepdims=True), 1.0)
    names = list(COLOURS)
    pal = np.array([COLOURS[n] for n in names], np.float32)
    pal /= pal.max(-1, keepdims=True)
    nearest = np.argmin(((hue[..., None, :] - pal) ** 2).sum(-1), axis=-1)
    out = {}
    for i, name in enumerate(names):
        m = shape_px & (nearest == i)
        if m.sum() >= 20:  # ignore stray pixels (there should be none)
            out[name] = m
    return out


def centroids(mask: np.ndarray) -> np.ndarray:
    """[T, 2] (x, y) mean pixel position per frame, NaN where absent."""
    out = np.full((mask.shape[0], 2), np.nan)
    for t in range(mask.shape[0]):
        ys, xs = np.nonzero(mask[t])
        if len(xs):
            out[t] = xs.mean(), ys.mean()
    return out


def shape_of(mask2d: np.ndarray, size: int) -> str:
    """The SHAPE_KINDS name whose silhouette, cropped to its bounding box, matches `mask2d` best."""
    ys, xs = np.nonzero(mask2d)
    crop = mask2d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    best, best_iou = None, -1.0
    for kind in SHAPE_KINDS:
        s = sprite_mask(kind, size)
        sy, sx = np.nonzero(s)
        s = s[sy.min() : sy.max() + 1, sx.min() : sx.max() + 1]
        if s.shape != crop.shape:
            continue
        iou = (s & crop).sum() / (s | crop).sum()
        if iou > best_iou:
            best, best_iou = kind, iou
    return best


def named_colours(question: str) -> list[str]:
    return [w for w in question.split() if w in COLOURS]


def moves(c: np.ndarray) -> bool:
    c = c[~np.isnan(c[:, 0])]
    return len(c) > 1 and float(np.abs(c - c[0]).max()) > _MOVE_PX


def answer_from_pixels(item, cfg: SynthConfig) -> str:
    """Read the family's answer off the frames alone (plus the question text the model also sees)."""
    masks = colour_masks(item.frames)
    cents = {c: centroids(m) for c, m in masks.items()}
    T, S = cfg.frames, cfg.size
    if item.family == "direction":
        c = cents[named_colours(item.question)[0]]
        c = c[~np.isnan(c[:, 0])]
        dx, dy = c[-1] - c[0]
        return ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    if item.family == "moved":
        movers = [c for c in cents if moves(cents[c])]
        assert len(movers) == 1, f"expected exactly one moving colour, got {movers}"
        return shape_of(masks[movers[0]][0], cfg.shape_px)
    if item.family == "order":
        a, b = named_colours(item.question)[:2]
        first = {c: int(np.flatnonzero(masks[c].any((1, 2)))[0]) for c in (a, b)}
        assert first[a] != first[b]
        return "before" if first[a] < first[b] else "after"
    if item.family == "count":
        return ("one", "two", "three", "four")[len(masks) - 1]
    if item.family == "colour":
        movers = [c for c in cents if moves(cents[c])]
        assert len(movers) == 1, f"expected exactly one moving colour, got {movers}"
        extent = {c: np.ptp(np.nonzero(masks[c][0])[1]) for c in masks}  # width in frame 0
        assert sorted(extent.values())[1] <= cfg.small_px, f"size alone must not answer: {extent}"
        return movers[0]
    if item.family == "position":
        x, y = cents[named_colours(item.question)[0]][-1]
        x0, y0 = cents[named_colours(item.question)[0]][0]
        start = ("bottom" if y0 > S / 2 else "top") + "-" + ("right" if x0 > S / 2 else "left")
        end = ("bottom" if y > S / 2 else "top") + "-" + ("right" if x > S / 2 else "left")
        assert start != end, "the target must start in another quadrant"
        return end
    if item.family == "half":
        c = cents[named_colours(item.question)[0]]
        steps = np.abs(np.diff(c, axis=0)).max(-1) > 0  # [T-1] moved between frame t and t+1
        in_first, in_second = steps[: T // 2 - 1].any(), steps[T // 2 :].any()
        assert in_first != in_second, f"motion in both or neither half: {steps}"
        return "first" if in_first else "second"
    raise AssertionError(f"no pixel check for family {item.family}")


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("cfg", [CFG8, CFG16], ids=["T8", "T16"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_answer_is_determined_by_the_pixels(family, cfg):
    fam = FAMILIES[family]
    for k in range(2 * len(fam.answers)):
        for_answer = fam.answers[k % len(fam.answers)]
        item = make_item(1000 + 31 * k, cfg, family=family, answer=for_answer)
        assert item.answer == for_answer
        assert answer_from_pixels(item, cfg) == item.answer, (item.seed, item.question)


def test_pixels_match_answers_for_a_real_split():
    """The seed-derived items (what training and the test split use), not overridden ones."""
    for i in range(2 * len(FAMILIES)):
        item = split_item("validation", i, CFG8)
        assert (item.family, item.answer) == family_and_answer(item.seed, CFG8)
        assert answer_from_pixels(item, CFG8) == item.answer, (item.seed, item.question)


def test_same_seed_same_item_and_different_seeds_differ():
    a, b, c = make_item(42, CFG8), make_item(42, CFG8), make_item(42 + 7 * 12, CFG8)
    assert np.array_equal(a.frames, b.frames) and (a.question, a.answer) == (b.question, b.answer)
    assert (a.family, a.answer) == (c.family, c.answer)  # same place in the cycle...
    assert not np.array_equal(a.frames, c.frames)  # ...but another video
    listed = list(iter_split("train", 2, CFG8, base_seed=4, start=9))
    assert [x.seed for x in listed] == [split_seed("train", 9, 4), split_seed("train", 10, 4)]
    assert np.array_equal(listed[1].frames, split_item("train", 10, CFG8, base_seed=4).frames)


def test_frames_shape_dtype_and_background_saturation():
    item = make_item(5, CFG16)
    assert item.frames.shape == (16, 112, 112, 3) and item.frames.dtype == np.uint8
    f = item.frames.astype(np.int16)
    spread = f.max(-1) - f.min(-1)
    shapes = np.zeros(spread.shape, bool)
    for m in colour_masks(item.frames).values():
        shapes |= m
    assert spread[~shapes].max() <= 30


def test_balance_is_exact_over_a_full_cycle():
    n_cycle = len(FAMILIES) * int(np.lcm.reduce([len(f.answers) for f in FAMILIES.values()]))
    for split in SPLITS:
        seeds = [split_seed(split, i, base_seed=3) for i in range(n_cycle)]
        fams = Counter(family_and_answer(s, CFG8)[0] for s in seeds)
        assert set(fams.values()) == {n_cycle // len(FAMILIES)}
        for name, fam in FAMILIES.items():
            answers = Counter(a for f, a in (family_and_answer(s, CFG8) for s in seeds) if f == name)
            assert sorted(answers) == sorted(fam.answers)
            assert len(set(answers.values())) == 1, (name, answers)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(SPLITS), st.integers(0, 5000), st.integers(1, 400), st.integers(0, 100))
def test_balance_within_one_for_any_window(split, start, n, base):
    pairs = [family_and_answer(split_seed(split, start + i, base), CFG8) for i in range(n)]
    fams = Counter(f for f, _ in pairs)
    assert max(fams.values()) - min(fams.get(f, 0) for f in FAMILIES) <= 1
    for name, fam in FAMILIES.items():
        answers = Counter(a for f, a in pairs if f == name)
        counts = [answers.get(a, 0) for a in fam.answers]
        assert max(counts) - min(counts) <= 1, (name, answers)


def test_realised_answers_follow_the_seed_cycle():
    """make_scene (not only the arithmetic) yields the balanced answers."""
    got = Counter()
    n = len(FAMILIES) * 12
    for i in range(n):
        _, question, answer, family = make_scene(split_seed("train", i), CFG8)
        got[(family, answer)] += 1
    for name, fam in FAMILIES.items():
        counts = [got[(name, a)] for a in fam.answers]
        assert sum(counts) == 12 and max(counts) == min(counts), (name, counts)


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.sampled_from(SPLITS), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1)),
    st.tuples(st.sampled_from(SPLITS), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1)),
)
def test_split_seeds_never_collide(a, b):
    sa, sb = split_seed(*a), split_seed(*b)
    assert seed_split(sa) == a[0]
    assert (sa == sb) == (a == b)


def test_split_seed_ranges_are_disjoint_and_checked():
    ranges = [(split_seed(s, 0, 0), split_seed(s, 2**32 - 1, 2**16 - 1)) for s in SPLITS]
    for i in range(len(ranges)):
        for j in range(i + 1, len(ranges)):
            assert ranges[i][1] < ranges[j][0] or ranges[j][1] < ranges[i][0]
    sets = [{split_item(s, i, CFG8).seed for i in range(3)} for s in SPLITS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    for bad in [("dev", 0, 0), ("train", -1, 0), ("train", 2**32, 0), ("train", 0, 2**16)]:
        with pytest.raises(BadRequest):
            split_seed(*bad)


def test_vocabulary_covers_every_question_and_option():
    vocab = set(vocabulary())
    assert vocabulary() == sorted(vocab)
    for i in range(3 * len(FAMILIES)):
        _, question, answer, family = make_scene(i, CFG8)
        assert set(question.split()) <= vocab, question
        assert set(FAMILIES[family].answers) <= vocab and answer in FAMILIES[family].answers
    assert set(QUADRANTS) <= vocab and set(COLOURS) <= vocab


def test_panning_background_shifts_by_the_pan():
    bg = Background(base_rgb=(100, 104, 98), gratings=((0.05, 0.03, 0.4, 10.0), (-0.02, 0.08, 1.0, 8.0)), pan_px_per_frame=(1.0, 0.0))
    frames = render_background(bg, 6, 64)
    assert frames.shape == (6, 64, 64, 3)
    for t in range(5):  # the camera moves right by 1 px: content moves left by 1 px
        assert np.array_equal(frames[t + 1][:, :-1], frames[t][:, 1:])
    assert not np.array_equal(frames[0], frames[1])
    still = render_background(Background((100, 100, 100), bg.gratings), 4, 64)
    assert all(np.array_equal(still[0], still[t]) for t in range(4))


def test_colour_family_background_is_static():
    """Only the small mover moves (other families pan with probability 0.5, so 8 seeds would catch one)."""
    for seed in range(8):
        item = make_item(seed, CFG16, family="colour")
        shape_any = np.zeros(item.frames.shape[1:3], bool)
        for m in colour_masks(item.frames).values():
            shape_any |= m.any(0)
        bg = item.frames[:, ~shape_any]  # pixels no shape ever touches
        assert (bg == bg[0]).all(), seed


@pytest.mark.parametrize(
    "kwargs", [{"frames": 7}, {"frames": 2}, {"size": 80}, {"families": ("direction", "nope")}, {"small_px": 40}, {"travel": (0.5, 0.9)}]
)
def test_bad_config_is_a_user_error(kwargs):
    with pytest.raises(BadRequest):
        SynthConfig(**kwargs)


def _decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        frames, with_mvs = [], 0
        for frame in c.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            with_mvs += frame.side_data.get("MOTION_VECTORS") is not None
        return stream.codec_context.name, np.stack(frames), with_mvs


def test_write_dataset_h264_and_jsonl(tmp_path):
    n = 8
    index = write_dataset(tmp_path, "test", n, seed=1, fps=8.0, cfg=CFG8)
    lines = index.read_text().splitlines()
    assert len(lines) == n
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert set(rec) == {"video", "question", "options", "answer", "family", "seed"}
        assert rec["seed"] == split_seed("test", i, 1) and rec["answer"] in rec["options"]
        assert rec["options"] == list(FAMILIES[rec["family"]].answers)
        codec, frames, with_mvs = _decode(index.parent / rec["video"])
        assert codec == "h264" and frames.shape == (8, 112, 112, 3)
        assert with_mvs > 0, "H.264 P/B-frames should carry motion vectors"
        raw = split_item("test", i, CFG8, base_seed=1).frames
        assert np.abs(frames.astype(np.int16) - raw).mean() < 6  # the file holds these frames
    config = json.loads((tmp_path / "test.config.json").read_text())
    assert config["synth_config"]["frames"] == 8 and config["seed"] == 1
    with pytest.raises(BadRequest):
        write_dataset(tmp_path, "test", n, cfg=CFG8)
    write_dataset(tmp_path, "test", 2, cfg=CFG8, overwrite=True)
    assert len(index.read_text().splitlines()) == 2 and len(list((tmp_path / "test").iterdir())) == 2


def test_write_dataset_rejects_bad_arguments(tmp_path):
    for kwargs in [{"split": "dev", "n": 1}, {"split": "test", "n": 0}, {"split": "test", "n": 1, "codec": "h266"}]:
        with pytest.raises(VidsieveError):
            write_dataset(tmp_path / "x", cfg=CFG8, **kwargs)


def test_cli_make_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = cli.main(["make-dataset", "--split", "validation", "--n", "3", "--out", str(out), "--frames", "8", "--seed", "2", "--pan-prob", "0"])
    assert rc == 0
    config = json.loads((out / "validation.config.json").read_text())
    assert config["synth_config"]["pan_prob"] == 0 and config["synth_config"]["frames"] == 8
    recs = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in recs] == [split_seed("validation", i, 2) for i in range(3)]
    assert all((out / r["video"]).stat().st_size > 0 for r in recs)
    assert "wrote 3 items" in capsys.readouterr().out
    rc = cli.main(["make-dataset", "--split", "validation", "--n", "3", "--out", str(out), "--frames", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_colour_family_motion_vectors_fall_on_the_small_mover(tmp_path):
    """Why the colour family exists: in the encoded file, the codec's motion is the mover's."""
    from pipeline.videogen import write_video

    item = make_item(3, CFG16, family="colour")
    path = tmp_path / "colour.mp4"
    write_video(path, item.frames, 8.0, "h264")
    mover = colour_masks(item.frames)[item.answer]  # [T, H, W], found on pixels, not metadata
    near = on = 0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for t, frame in enumerate(c.decode(stream)):
            mv = frame.side_data.get("MOTION_VECTORS")
            if mv is None:
                continue
            a = mv.to_ndarray()
            a = a[(a["motion_x"] != 0) | (a["motion_y"] != 0)]
            ys, xs = np.nonzero(mover[t])
            dx = np.maximum(np.maximum(xs.min() - a["dst_x"], a["dst_x"] - xs.max()), 0)
            dy = np.maximum(np.maximum(ys.min() - a["dst_y"], a["dst_y"] - ys.max()), 0)
            near += int(((dx <= 8) & (dy <= 8)).sum())  # block centre within 8 px of the mover
            on += len(a)
    assert on > 0 and near / on >= 0.75, f"{near} of {on} moving blocks near the mover"


def test_answers_survive_h264(tmp_path):
    """What the benchmark decodes still shows the answer (centroid-based families; lossy edges
    make the exact silhouette and step checks of the other families too strict for decoded frames)."""
    cfg = SynthConfig(frames=8, families=("direction", "order", "position"))
    index = write_dataset(tmp_path, "test", 9, cfg=cfg)
    for line in index.read_text().splitlines():
        rec = json.loads(line)
        _, frames, _ = _decode(index.parent / rec["video"])
        decoded = type("Decoded", (), {"frames": frames, "family": rec["family"], "question": rec["question"]})
        assert answer_from_pixels(decoded, cfg) == rec["answer"], rec

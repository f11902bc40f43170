"""Seeded synthetic video QA: scenes of moving shapes with closed-answer questions.

`make_item(seed, cfg)` -> `SynthItem` (frames [T, S, S, 3] uint8, question, options, answer,
family, seed, scene). Everything follows from the seed: the family is `seed % F`, the answer
`(seed // F) % A` (F families, A answers of that family), and all other choices (positions,
colours, distractors, background) come from `np.random.default_rng(seed)`. Consecutive seeds
therefore cycle through families and answers: over any run of n consecutive seeds each family
gets n/F items (+-1) and, within a family, each answer the same count (+-1). Balance is by
construction, not by luck, so a model gains nothing from answer priors (chance = 1/A).

Modules: `synth_scenes.py` builds a family's scene for a given answer, `synth_render.py` turns
a scene into pixels, `synth_dataset.py` writes encoded videos and the JSONL index.

Splits never share a seed: `split_seed(split, index, base_seed)` puts split k in
[k * 2**48, (k + 1) * 2**48), base_seed in bits 32..47 and the index in bits 0..31.

## Families (answers) and what a model must keep to answer them

| family | question | answers | needs |
| --- | --- | --- | --- |
| direction | which way does the red circle move ? | left right up down | motion, binding colour+shape |
| moved | which shape moves ? | square circle triangle cross | motion (others static) |
| order | does the red circle appear before or after the blue square ? | before after | order over time |
| count | how many shapes are there ? | one two three four | every object (spatial coverage) |
| colour | what colour is the moving shape ? | red green blue yellow cyan magenta | a small mover among static distractors |
| position | where is the red circle at the end ? | top-left top-right bottom-left bottom-right | position in the last frames |
| half | in which half does the red circle move ? | first second | when motion happens |

Difficulty note (what dropping the wrong tokens costs):
- direction, moved, half and colour need motion: a compressor that keeps one frame, or drops the
  tokens that change between tubelets, loses them. `half` also needs the time axis intact
  (positions kept, not renumbered).
- order and half need order: tokens from early and late tubelets must both survive and keep
  their (t) positions.
- position needs the last tubelets (the target starts in another quadrant and still moves after
  3/4 of the video: its middle frame answers 0.48-0.53, its last 1.0), count needs every
  object somewhere in the video (spatial coverage, the family uniform sampling does well on).
- colour is the family where codec-aware compression should beat uniform: the answer is a
  small shape (16 px, about one patch) moving over a static background among static
  distractors of other colours, one of them as small as the mover (so size alone does not
  answer); the background never pans in this family, so the motion vectors in the encoded video
  are the mover's (tested: >= 75% of moving blocks lie on it). Uniform dropping keeps it only by
  chance.
Other families pan the background (probability `pan_prob`, <= `max_pan_px` per frame), so
"codec says something moved" is not free there, as in real camera motion.

Shapes default to 28 px (one merged 2x2 cell of 14 px patches); movers travel 30-45% of the
frame over their motion window: 34-50 px at 112 px, i.e. 4.5-6.7 px per 2-frame tubelet at 16
frames (9.7-14.4 px at 8 frames), twice that in the `half` family (the move takes half the video).
Why not more: in a bounded frame a rightward mover ends further right than it starts, so one
frame's position hints at the direction. With this travel a position-only classifier on the
first or last frame gets 0.49 on `direction` (chance 0.25, middle frame 0.38); at 35-60% travel
it got 0.62 (`python -m bench.synthqa` measures it).
Positions and motions are in image coordinates: the background is a layer behind the shapes, so
a pan moves the background only ("static" shapes stay put in the frame).
Questions are lower-case words separated by single spaces, "?" included: `question.split()` is
the word-level tokenisation and every word is in `vocabulary()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from encoders.errors import BadRequest
from pipeline.synth_render import SHAPE_KINDS, Scene, render
from pipeline.synth_scenes import COLOURS, FAMILIES, Crowded, get_family, make_background

SPLITS: tuple[str, ...] = ("train", "validation", "test")
_INDEX_BITS, _BASE_BITS = 32, 16


@dataclass(frozen=True)
class SynthConfig:
    """Video size and scene statistics. `PRESETS` holds named kwargs.

    frames: T (even: the encoder's tubelets are 2 frames). size: S, square frames.
    shape_px: side of ordinary shapes; small_px: the colour family's small mover.
    travel: (min, max) fraction of the frame a mover covers over its motion window.
    """

    frames: int = 16
    size: int = 112
    shape_px: int = 28
    small_px: int = 16
    families: tuple[str, ...] = ("direction", "moved", "order", "count", "colour", "position", "half")
    pan_prob: float = 0.5
    max_pan_px: float = 1.0
    travel: tuple[float, float] = (0.3, 0.45)
    colour_jitter: int = 12

    def __post_init__(self):
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "travel", tuple(self.travel))
        if self.frames < 4 or self.frames % 2:
            raise BadRequest(f"SynthConfig: frames must be even and >= 4 (2-frame tubelets), got {self.frames}")
        # Below ~3 shapes across, four non-overlapping shapes take many redraws (64 px: some fail).
        if self.size % 2 or self.size < 3 * self.shape_px + 8:
            raise BadRequest(
                f"SynthConfig: size must be even and >= 3*shape_px+8 = {3 * self.shape_px + 8} so four shapes fit "
                f"without overlapping, got {self.size} (or lower shape_px)"
            )
        if not 4 <= self.small_px <= self.shape_px:
            raise BadRequest(f"SynthConfig: need 4 <= small_px <= shape_px, got {self.small_px}, {self.shape_px}")
        if not self.families:
            raise BadRequest("SynthConfig: families is empty")
        for name in self.families:
            get_family(name)
        lo, hi = self.travel
        if not 0 < lo <= hi or hi * self.size > self.size - self.shape_px:
            raise BadRequest(f"SynthConfig: travel {self.travel} must satisfy 0 < min <= max <= 1 - shape_px/size")
        if not 0 <= self.pan_prob <= 1 or self.max_pan_px < 0:
            raise BadRequest(f"SynthConfig: pan_prob in [0, 1] and max_pan_px >= 0, got {self.pan_prob}, {self.max_pan_px}")


PRESETS: dict[str, dict] = {"default": {}, "tiny": {"frames": 8}}


@dataclass(frozen=True)
class SynthItem:
    """One QA item. frames: [T, S, S, 3] uint8 RGB. options: the family's answers, fixed order."""

    frames: np.ndarray
    question: str
    options: tuple[str, ...]
    answer: str
    family: str
    seed: int
    scene: Scene = field(repr=False)

    @property
    def answer_index(self) -> int:
        return self.options.index(self.answer)


# ---------------------------------------------------------------- seeds, balance, vocabulary


def split_seed(split: str, index: int, base_seed: int = 0) -> int:
    """The seed of item `index` of `split`; ranges of different splits never intersect."""
    if split not in SPLITS:
        raise BadRequest(f"synthqa: unknown split {split!r}; known: {', '.join(SPLITS)}")
    if not 0 <= index < 1 << _INDEX_BITS:
        raise BadRequest(f"synthqa: index must be in [0, 2**{_INDEX_BITS}), got {index}")
    if not 0 <= base_seed < 1 << _BASE_BITS:
        raise BadRequest(f"synthqa: seed must be in [0, {1 << _BASE_BITS}), got {base_seed}")
    return (SPLITS.index(split) << (_INDEX_BITS + _BASE_BITS)) | (base_seed << _INDEX_BITS) | index


def seed_split(seed: int) -> str:
    """The split a seed from `split_seed` belongs to."""
    k = seed >> (_INDEX_BITS + _BASE_BITS)
    if not 0 <= k < len(SPLITS):
        raise ValueError(f"seed_split: {seed} is not a split seed")
    return SPLITS[k]


def family_and_answer(seed: int, cfg: SynthConfig) -> tuple[str, str]:
    """The (family, answer) a seed stands for: cycles over families, then over that family's answers."""
    n_fam = len(cfg.families)
    fam = get_family(cfg.families[seed % n_fam])
    return fam.name, fam.answers[(seed // n_fam) % len(fam.answers)]


def vocabulary() -> list[str]:
    """Every word a question or answer can contain (question words split on spaces), sorted."""
    words = set(COLOURS) | set(SHAPE_KINDS)
    for fam in FAMILIES.values():
        words.update(w for w in fam.template.split() if not w.startswith("{"))
        words.update(fam.answers)
    return sorted(words)


# ---------------------------------------------------------------- items


def make_scene(seed: int, cfg: SynthConfig, family: str | None = None, answer: str | None = None):
    """(Scene, question, answer, family) for `seed`, without rendering.

    family/answer override what the seed stands for (tests, targeted sets); the rest still
    follows from the seed.
    """
    n_fam = len(cfg.families)
    fam = get_family(family or cfg.families[seed % n_fam])
    ans = answer if answer is not None else fam.answers[(seed // n_fam) % len(fam.answers)]
    if ans not in fam.answers:
        raise BadRequest(f"synthqa: {ans!r} is not an answer of family {fam.name!r}; answers: {', '.join(fam.answers)}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        try:
            tracks, words, allow_pan = fam.build(rng, cfg, ans)
            break
        except Crowded:
            continue
    else:  # pragma: no cover - would mean the config leaves no room for four shapes
        raise BadRequest(f"synthqa: could not lay out a {fam.name!r} scene in {cfg.size} px frames with {cfg.shape_px} px shapes")
    scene = Scene(frames=cfg.frames, size=cfg.size, background=make_background(rng, cfg, allow_pan), tracks=tuple(tracks))
    return scene, fam.template.format(**words), ans, fam.name


def make_item(seed: int, cfg: SynthConfig | None = None, family: str | None = None, answer: str | None = None) -> SynthItem:
    """Render the QA item of `seed` (see `make_scene`)."""
    cfg = cfg or SynthConfig()
    scene, question, ans, fam = make_scene(seed, cfg, family, answer)
    return SynthItem(render(scene), question, FAMILIES[fam].answers, ans, fam, seed, scene)


def split_item(split: str, index: int, cfg: SynthConfig | None = None, base_seed: int = 0) -> SynthItem:
    """Item `index` of `split` (seed from `split_seed`)."""
    return make_item(split_seed(split, index, base_seed), cfg)


def iter_split(split: str, n: int, cfg: SynthConfig | None = None, base_seed: int = 0, start: int = 0):
    """Yield items start..start+n-1 of `split` (a training loader may instead draw random indices)."""
    for i in range(start, start + n):
        yield split_item(split, i, cfg, base_seed)


def write_dataset(out_dir, split: str, n: int, seed: int = 0, codec: str = "h264", fps: float = 8.0, cfg=None, overwrite=False):
    """Write `n` items of `split` as video files plus `<split>.jsonl`; see `pipeline.synth_dataset`."""
    from pipeline.synth_dataset import write_dataset as _write  # I/O lives in its own module

    return _write(out_dir, split, n, seed=seed, codec=codec, fps=fps, cfg=cfg, overwrite=overwrite)

"""`AskOptions`: everything a request may set, checked once, shared by the CLI, the service and the batch job.

Budgets and strategies are per request, never server-wide constants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from encoders.errors import BadRequest
from pipeline.weighting import ATTENTION_MODES
from tokencomp.plan import DROPPED_MODES

POSITION_MODES = ("keep", "compact", "centroid")
CODEC_PLACEMENTS = ("after", "before")
# The highest sampling rate a request may ask for. Sampling at or above a video's own rate takes every
# frame, so this is also how to ask for every frame of any ordinary video.
EVERY_FRAME_FPS = 240.0


@dataclass(frozen=True)
class AskOptions:
    """One request's knobs.

    strategy: a registered compression strategy or a '+'-composition of them ("codec+tome").
    keep_ratio / tokens_per_frame: the compression budget; at most one may be set (neither = keep all).
    fps: sampling rate in frames per second (frames at k/fps seconds); None with num_frames unset = 2.0.
    num_frames: a fixed count of evenly spaced frames instead of fps.
    max_frames: cap on sampled frames.
    max_new_tokens: cap on generated tokens.
    temperature / top_p / seed: sampling; temperature 0 = greedy.
    position_mode: "keep" (original positions, default), "compact" (renumbered baseline) or "centroid"
        (a merged token at the mean of the positions it absorbed).
    codec_placement: for strategies starting with `codec`: "after" the encoder (drop tokens; the
        encoder sees everything, default) or "before" it (only the chosen cells are encoded).
    dropped: what compression does with the tokens a strategy drops: "absorb" (default: each is
        counted in the weight of the kept token most like it, `tokencomp.plan.absorb_dropped`) or
        "drop" (plain pruning). Pre-selection (codec_placement="before") never encodes the cells
        it skips, so those are not counted.
    attention: "proportional" (default: a token standing for w originals gets log(w) added to its
        attention logits in the LLM, `pipeline/weighting.py`) or "plain" (every token counts once).
    chunk_frames: process the video in runs of this many sampled frames (a multiple of the
        model's tubelet, 2 frames): the next run decodes while the current one is encoded, and
        frames and encoder activations are held for about three runs only, whatever the video's
        length. Exact for qwen2_5_vl (its attention never crosses a tubelet); for st3d encoders
        (attention over the whole video) attention then spans one run. None: the whole video at once.
    """

    strategy: str = "none"
    keep_ratio: float | None = None
    tokens_per_frame: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    max_frames: int = 64
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    position_mode: str = "keep"
    codec_placement: str = "after"
    chunk_frames: int | None = None
    dropped: str = "absorb"
    attention: str = "proportional"

    def __post_init__(self):
        _check(isinstance(self.strategy, str) and self.strategy.strip() != "", "strategy", "a strategy name", self.strategy)
        if self.keep_ratio is not None and self.tokens_per_frame is not None:
            raise BadRequest("set at most one of keep_ratio and tokens_per_frame, got both")
        if self.keep_ratio is not None:
            _check(_finite(self.keep_ratio) and 0 < self.keep_ratio <= 1, "keep_ratio", "a number in (0, 1]", self.keep_ratio)
        if self.tokens_per_frame is not None:
            _check(_finite(self.tokens_per_frame) and self.tokens_per_frame > 0, "tokens_per_frame", "a number > 0", self.tokens_per_frame)
        if self.fps is not None and self.num_frames is not None:
            raise BadRequest("set at most one of fps and num_frames, got both")
        if self.fps is not None:
            _check(_finite(self.fps) and 0 < self.fps <= EVERY_FRAME_FPS, "fps", f"a number in (0, {EVERY_FRAME_FPS:g}]", self.fps)
        if self.num_frames is not None:
            _check(_is_int(self.num_frames) and self.num_frames >= 1, "num_frames", "an integer >= 1", self.num_frames)
        _check(_is_int(self.max_frames) and 1 <= self.max_frames <= 4096, "max_frames", "an integer in [1, 4096]", self.max_frames)
        _check(_is_int(self.max_new_tokens) and 1 <= self.max_new_tokens <= 4096, "max_new_tokens", "an integer in [1, 4096]", self.max_new_tokens)
        _check(_finite(self.temperature) and 0 <= self.temperature <= 10, "temperature", "a number in [0, 10]", self.temperature)
        _check(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "a number in (0, 1]", self.top_p)
        if self.seed is not None:
            _check(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _check(self.position_mode in POSITION_MODES, "position_mode", f"one of {POSITION_MODES}", self.position_mode)
        _check(self.codec_placement in CODEC_PLACEMENTS, "codec_placement", f"one of {CODEC_PLACEMENTS}", self.codec_placement)
        _check(self.dropped in DROPPED_MODES, "dropped", f"one of {DROPPED_MODES}", self.dropped)
        _check(self.attention in ATTENTION_MODES, "attention", f"one of {ATTENTION_MODES}", self.attention)
        if self.chunk_frames is not None:
            _check(_is_int(self.chunk_frames) and 2 <= self.chunk_frames <= 4096 and self.chunk_frames % 2 == 0,
                   "chunk_frames", "an even integer in [2, 4096]", self.chunk_frames)
            if self.codec_placement == "before":
                raise BadRequest("chunk_frames cannot be combined with codec_placement='before' (pre-selection spreads "
                                 "the budget over the whole video); use codec_placement='after'")

    @property
    def sampling_fps(self) -> float | None:
        """The fps to sample at: the request's, or 2.0 when neither fps nor num_frames was given."""
        if self.fps is None and self.num_frames is None:
            return 2.0
        return self.fps

    @property
    def budget_label(self) -> str:
        if self.keep_ratio is not None:
            return f"keep_ratio={self.keep_ratio:g}"
        if self.tokens_per_frame is not None:
            return f"tokens_per_frame={self.tokens_per_frame:g}"
        return "all"

    @classmethod
    def from_dict(cls, values: dict) -> "AskOptions":
        """Build from a JSON-like dict (HTTP body, batch config); unknown keys are an error, None means default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadRequest(f"unknown option(s) {unknown}; known options are {sorted(known)}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


def add_weight_arguments(p) -> None:
    """`--dropped` and `--attention` (the `dropped` / `attention` fields above) on a command line."""
    p.add_argument("--dropped", default=AskOptions.dropped, choices=list(DROPPED_MODES),
                   help="tokens a strategy drops: counted in the weight of the most similar kept token (absorb) or gone (drop)")
    p.add_argument("--attention", default=AskOptions.attention, choices=list(ATTENTION_MODES),
                   help="LLM attention to a token standing for w originals: as w tokens (proportional) or as one (plain)")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        raise BadRequest(f"{name} must be {expected}, got {got!r}")

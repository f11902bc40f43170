"""`CodecSignals`: what the video codec already computed about the sampled frames.

Produced by the decode stage (`pipeline/decode.py`), consumed by codec-aware compression
(`tokencomp/`). Lives here, beside `VisualTokens`, because both of those layers may import
`encoders` types and neither may import the other's direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOTION_SOURCES = ("mv", "residual")


@dataclass(frozen=True)
class CodecSignals:
    """Per sampled frame: picture type and a motion map on a grid of square cells.

    picture_types: one of "I", "P", "B" (or "?" when the container gave none) per sampled frame.
    motion: [F, Hc, Wc] float32. For `source == "mv"`: mean |motion vector| (in pixels of the
        *output* frame, per frame of the source video) of the codec's blocks landing in each cell,
        averaged over every inter frame decoded since the previous sampled frame, so motion between
        two sampled frames is not lost when sampling skips frames (I-frames carry no vectors; a
        span holding only I-frames reads 0). Units and codec caveats: docs/codecs.md. For
        `source == "residual"`: mean
        absolute difference (0..255) against the previous sampled frame (0 for the first frame).
    keyframe: [F] bool, True where the sampled frame or any frame since the previous sample is an
        I-frame / keyframe (a scene cut in most encoders).
    cell_px: side of a cell in output-frame pixels (e.g. 14 for patches, 28 for merged cells).
    source: "mv" when motion vectors were read, "residual" when the codec exports none.
    codec: the stream's codec name as FFmpeg reports it (h264, hevc, vp9, ...).
    """

    picture_types: tuple[str, ...]
    motion: np.ndarray
    keyframe: np.ndarray
    cell_px: int
    source: str
    codec: str

    def __post_init__(self):
        if self.source not in MOTION_SOURCES:
            raise ValueError(f"CodecSignals.source must be one of {MOTION_SOURCES}, got {self.source!r}")
        if self.motion.ndim != 3:
            raise ValueError(f"CodecSignals.motion must be [F, Hc, Wc], got shape {tuple(self.motion.shape)}")
        n = self.motion.shape[0]
        if len(self.picture_types) != n or self.keyframe.shape != (n,):
            raise ValueError(
                f"CodecSignals: {n} motion maps but {len(self.picture_types)} picture types and "
                f"keyframe shape {tuple(self.keyframe.shape)}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @staticmethod
    def join(parts: list["CodecSignals"]) -> "CodecSignals":
        """Signals of consecutive runs of one video's sampled frames, as one (rows in order)."""
        if not parts:
            raise ValueError("CodecSignals.join needs at least one part")
        kinds = {(p.cell_px, p.source, p.codec, p.motion.shape[1:]) for p in parts}
        if len(kinds) != 1:
            raise ValueError(f"CodecSignals.join: parts differ in cell size, source, codec or grid: {sorted(map(str, kinds))}")
        return CodecSignals(
            picture_types=tuple(t for p in parts for t in p.picture_types),
            motion=np.concatenate([p.motion for p in parts], 0),
            keyframe=np.concatenate([p.keyframe for p in parts], 0),
            cell_px=parts[0].cell_px,
            source=parts[0].source,
            codec=parts[0].codec,
        )

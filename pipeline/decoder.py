"""`Decoder`: the decode stage without a model. What decoding needs from a checkpoint is two numbers
from its video processor: the merged-cell size (codec signals are read on that grid) and the
per-frame pixel cap (frames are decoded straight to it, so signal cells line up with the encoder's
grid). Ray decode actors build one from the model directory's processor config alone, never loading
weights; the Engine builds one from its loaded processor, so both decode identically.

    decoder = Decoder.from_model_dir("models/vidsieve-tiny")
    decoded = decoder.decode("clip.mp4", AskOptions(strategy="codec", keep_ratio=0.25))
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from encoders.errors import BadRequest
from pipeline.decode import SampledFrames, sample_frames
from pipeline.options import AskOptions


@dataclass(frozen=True)
class Decoded:
    """A decoded video: the sampled frames (numpy, picklable) and where they came from."""

    video: str
    sampled: SampledFrames
    decode_ms: float


@dataclass(frozen=True)
class Decoder:
    """cell_px: merged-cell side in pixels (patch_size x merge_size); max_pixels: per-frame cap (None: native)."""

    cell_px: int
    max_pixels: int | None

    @staticmethod
    def from_video_processor(video_processor) -> "Decoder":
        size = video_processor.size
        cap = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
        return Decoder(cell_px=int(video_processor.patch_size) * int(video_processor.merge_size),
                       max_pixels=int(cap) if cap else None)

    @staticmethod
    def from_model_dir(model_dir: str | Path) -> "Decoder":
        """Read the checkpoint's video processor config only (no weights, no tokenizer)."""
        from transformers import AutoVideoProcessor

        path = Path(model_dir)
        try:
            processor = AutoVideoProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise BadRequest(f"{path}: no usable video processor config ({type(e).__name__}); is it a Qwen2.5-VL "
                             f"checkpoint directory?") from None
        return Decoder.from_video_processor(processor)

    def decode(self, video: str | Path, opts: AskOptions, signals: bool = False) -> Decoded:
        """Sample frames at the processor's pixel cap; with `signals`, codec signals on its cell grid."""
        t = time.perf_counter()
        sampled = sample_frames(
            video,
            fps=opts.sampling_fps,
            num_frames=opts.num_frames,
            max_frames=opts.max_frames,
            max_pixels=self.max_pixels,
            signals_cell_px=self.cell_px if signals else None,
        )
        return Decoded(video=str(video), sampled=sampled, decode_ms=(time.perf_counter() - t) * 1e3)

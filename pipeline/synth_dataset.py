"""Write a split of the synthetic video QA set to disk: real encoded videos and a JSONL index.

Layout under `out_dir`:
    <split>.jsonl          one line per item: {"video": "<split>/000000.mp4", "question": str,
                           "options": [...], "answer": str, "family": str, "seed": int}
                           (MVBench / Video-MME export shape; "video" is relative to the JSONL)
    <split>/NNNNNN.mp4     the item's frames, encoded with `codec` at `fps`
    <split>.config.json    the SynthConfig, codec, fps and base seed that made it (reproducible)

Videos are encoded for real (libx264 by default) so codec signals (motion vectors, frame types)
exist when the benchmark decodes them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from encoders.errors import BadRequest
from pipeline.synthqa import SPLITS, SynthConfig, split_item
from pipeline.videogen import ENCODERS, write_video


def item_record(item, video_rel: str) -> dict:
    """The JSONL line of one `SynthItem` whose video lies at `video_rel` (relative to the index)."""
    return {
        "video": video_rel,
        "question": item.question,
        "options": list(item.options),
        "answer": item.answer,
        "family": item.family,
        "seed": int(item.seed),
    }


def write_dataset(
    out_dir: str | Path,
    split: str,
    n: int,
    seed: int = 0,
    codec: str = "h264",
    fps: float = 8.0,
    cfg: SynthConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Render and encode items 0..n-1 of `split` (base seed `seed`); return the JSONL path.

    Refuses to replace an existing `<split>.jsonl` unless `overwrite`.
    """
    cfg = cfg or SynthConfig()
    if split not in SPLITS:
        raise BadRequest(f"make-dataset: unknown split {split!r}; known: {', '.join(SPLITS)}")
    if n < 1:
        raise BadRequest(f"make-dataset: --n must be >= 1, got {n}")
    if codec not in ENCODERS:
        raise BadRequest(f"make-dataset: unknown codec {codec!r}; known: {', '.join(sorted(ENCODERS))}")
    if not fps > 0:
        raise BadRequest(f"make-dataset: fps must be > 0, got {fps}")
    out = Path(out_dir)
    index_path = out / f"{split}.jsonl"
    video_dir = out / split
    if index_path.exists() or video_dir.exists():
        if not overwrite:
            raise BadRequest(f"make-dataset: {index_path} or {video_dir}/ already exists; pass --overwrite or another --out")
        shutil.rmtree(video_dir, ignore_errors=True)
    video_dir.mkdir(parents=True, exist_ok=True)
    tmp_index = index_path.with_suffix(".jsonl.tmp")
    with open(tmp_index, "w", encoding="utf-8") as f:
        for i in range(n):
            item = split_item(split, i, cfg, base_seed=seed)
            rel = f"{split}/{i:06d}.mp4"
            write_video(out / rel, item.frames, fps, codec)
            f.write(json.dumps(item_record(item, rel)) + "\n")
    tmp_index.replace(index_path)  # the index appears only once every video it names exists
    config = {"synth_config": dataclasses.asdict(cfg), "split": split, "n": n, "seed": seed, "codec": codec, "fps": fps}
    (out / f"{split}.config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return index_path

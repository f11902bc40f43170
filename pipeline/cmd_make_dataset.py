"""`vidsieve make-dataset`: write a split of the synthetic video QA set (encoded videos + JSONL).

    vidsieve make-dataset --split test --n 200 --out data/synth [--seed 0] [--frames 16] [--size 112]

Writes DIR/<split>.jsonl (one {"video", "question", "options", "answer", "family", "seed"} per
line), DIR/<split>/NNNNNN.mp4 and DIR/<split>.config.json. The same arguments always write the
same questions and the same frames; the train, validation and test splits never share a seed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from pipeline.synth_dataset import write_dataset
from pipeline.synth_scenes import FAMILIES
from pipeline.synthqa import SPLITS, SynthConfig
from pipeline.videogen import ENCODERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", required=True, choices=SPLITS, help="which split (seeds never overlap between splits)")
    parser.add_argument("--n", type=int, required=True, help="number of items")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="base seed, 0..65535 (default 0)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video, even (default 16)")
    parser.add_argument("--size", type=int, default=112, help="frame side in pixels, even (default 112)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate written in the files (default 8)")
    parser.add_argument("--codec", default="h264", choices=sorted(ENCODERS), help="video codec (default h264)")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help=f"comma-separated question families (default all: {','.join(FAMILIES)})"
    )
    parser.add_argument("--pan-prob", type=float, default=0.5, help="probability that the background pans (default 0.5; never in 'colour')")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing split in --out")


def run(args: argparse.Namespace) -> int:
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    cfg = SynthConfig(frames=args.frames, size=args.size, families=families, pan_prob=args.pan_prob)
    start = time.perf_counter()
    index = write_dataset(args.out, args.split, args.n, seed=args.seed, codec=args.codec, fps=args.fps, cfg=cfg, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    with open(index, encoding="utf-8") as f:
        counts = Counter(json.loads(line)["family"] for line in f)
    per_family = ", ".join(f"{name} {counts[name]}" for name in families)
    print(f"wrote {args.n} items to {index} in {seconds:.1f} s ({per_family})")
    return 0

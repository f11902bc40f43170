"""`vidsieve demo`: the whole pipeline on the shipped demo model, no downloads, a minute on a CPU.

Writes one held-out synthetic video per question family as a real H.264 file, then for each:
decode (with the codec's motion vectors) -> encode -> answer with every token, and again with a
compressed stream (default `codec` at 25% of the tokens), every kept token at its original
(t, h, w) position. Prints the answers next to the truth and the token accounting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipeline.options import EVERY_FRAME_FPS, AskOptions
from pipeline.scoring import is_correct


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model directory (default: $VIDSIEVE_MODEL, then the shipped demo model)")
    p.add_argument("--strategy", default="codec", help="compression strategy to compare with the full stream")
    p.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of visual tokens the compressed run keeps")
    p.add_argument("--per-family", type=int, default=1, help="videos per question family")
    p.add_argument("--keep", metavar="DIR", default=None, help="write the generated videos to DIR instead of a temp dir")
    p.add_argument("--json", action="store_true", help="print one JSON object with every answer as the last line")


def run(args: argparse.Namespace) -> int:
    from pipeline.engine import Engine
    from pipeline.synth_dataset import write_dataset
    from pipeline.synthqa import SynthConfig
    from pipeline.train_demo import DemoRecipe

    started = time.perf_counter()
    engine = Engine(args.model)
    recipe = DemoRecipe()
    cfg = SynthConfig(frames=recipe.frames, size=recipe.size)
    full_opts = AskOptions(fps=EVERY_FRAME_FPS, max_new_tokens=6)
    small_opts = AskOptions(strategy=args.strategy, keep_ratio=args.keep_ratio, fps=EVERY_FRAME_FPS, max_new_tokens=6)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidsieve-demo-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        n = len(cfg.families) * args.per_family
        index = write_dataset(folder, "test", n, cfg=cfg, overwrite=True)
        print(f"model {engine.model_name}; wrote {n} H.264 test videos ({cfg.frames} frames of {cfg.size}x{cfg.size}) to {folder}")
        for line in index.read_text().splitlines():
            item = json.loads(line)
            video = folder / item["video"]
            decoded = engine.decode(video, small_opts)  # reads codec signals too
            full = engine.encode(decoded, full_opts)
            a_full = engine.answer(full, item["question"], full_opts)
            small = engine.compress(full, small_opts, signals=decoded.sampled.signals, question=item["question"])
            a_small = engine.answer(small, item["question"], small_opts)
            rows.append({"family": item["family"], "question": item["question"], "truth": item["answer"],
                         "full": a_full["answer"], "full_ok": is_correct(a_full["answer"], item["answer"], item["options"]),
                         "compressed": a_small["answer"],
                         "compressed_ok": is_correct(a_small["answer"], item["answer"], item["options"]),
                         "tokens_before": a_full["stats"]["tokens_before"], "tokens_after": a_small["stats"]["tokens_after"],
                         "ms_full": a_full["stats"]["timings_ms"]["total"], "ms_compressed": a_small["stats"]["timings_ms"]["total"]})
    width = max(len(r["question"]) for r in rows)
    print(f"\n{'question':<{width}}  {'truth':<12} {'all tokens':<14} {args.strategy} @ {args.keep_ratio:g}")
    for r in rows:
        mark = lambda ok: "ok" if ok else "--"  # noqa: E731
        print(f"{r['question']:<{width}}  {r['truth']:<12} {r['full']:<11} {mark(r['full_ok'])} {r['compressed']:<11} {mark(r['compressed_ok'])}")
    n_full = sum(r["full_ok"] for r in rows)
    n_small = sum(r["compressed_ok"] for r in rows)
    before = sum(r["tokens_before"] for r in rows)
    after = sum(r["tokens_after"] for r in rows)
    print(f"\ncorrect: {n_full}/{len(rows)} with all {before} visual tokens, {n_small}/{len(rows)} with {after} "
          f"({100 * after / before:.0f}%) kept by {args.strategy}; {time.perf_counter() - started:.1f} s in all")
    if args.json:
        print(json.dumps({"rows": rows, "correct_full": n_full, "correct_compressed": n_small,
                          "tokens_before": before, "tokens_after": after}))
    return 0

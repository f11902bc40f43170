"""Speed and size of the synthetic video QA set: render time per video, H.264 write time, file sizes.

    .venv/bin/python -m bench.synthqa [--frames 8 16] [--n-render 1000] [--n-write 100] [--json FILE]

Render = scene sampling + pixels (`make_item`), single thread, as a training data loader
calls it; reported as median / mean / p95 per video and per family. Write = `write_dataset`
(render + libx264 encode + JSONL) per item, and the bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.synth_dataset import write_dataset
from pipeline.synth_render import render
from pipeline.synthqa import SynthConfig, make_scene, split_seed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="frames per video (even)")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--n-render", type=int, default=1000, help="videos rendered per setting")
    p.add_argument("--n-write", type=int, default=100, help="H.264 items written per setting")
    p.add_argument("--json", help="write the results here as JSON")


def _render_stats(cfg: SynthConfig, n: int) -> dict:
    scene_ms, pixel_ms, per_family = [], [], defaultdict(list)
    for i in range(n):
        t0 = time.perf_counter()
        scene, _, _, family = make_scene(split_seed("train", i), cfg)
        t1 = time.perf_counter()
        render(scene)
        t2 = time.perf_counter()
        scene_ms.append((t1 - t0) * 1e3)
        pixel_ms.append((t2 - t1) * 1e3)
        per_family[family].append((t2 - t0) * 1e3)
    total = np.add(scene_ms, pixel_ms)
    return {
        "total_ms": {"median": float(np.median(total)), "mean": float(total.mean()), "p95": float(np.percentile(total, 95))},
        "scene_ms_mean": statistics.fmean(scene_ms),
        "pixels_ms_mean": statistics.fmean(pixel_ms),
        "per_family_ms_mean": {f: statistics.fmean(v) for f, v in per_family.items()},
    }


def _write_stats(cfg: SynthConfig, n: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        index = write_dataset(d, "test", n, cfg=cfg)
        seconds = time.perf_counter() - t0
        videos = sorted((Path(d) / "test").iterdir())
        sizes = [p.stat().st_size for p in videos]
        return {
            "ms_per_item": seconds / n * 1e3,
            "video_kb_mean": statistics.fmean(sizes) / 1024,
            "video_kb_max": max(sizes) / 1024,
            "total_kb": (sum(sizes) + index.stat().st_size) / 1024,
            "jsonl_bytes_per_item": index.stat().st_size / n,
        }


def run(args) -> int:
    results = []
    for frames in args.frames:
        cfg = SynthConfig(frames=frames, size=args.size)
        make_scene(0, cfg)  # warm caches (sprites)
        row = {"frames": frames, "size": args.size, "render": _render_stats(cfg, args.n_render), "write": _write_stats(cfg, args.n_write)}
        results.append(row)
        r, w = row["render"], row["write"]
        print(
            f"{frames}x{args.size}x{args.size}: render median {r['total_ms']['median']:.2f} ms, mean {r['total_ms']['mean']:.2f}, "
            f"p95 {r['total_ms']['p95']:.2f} (scene {r['scene_ms_mean']:.2f} + pixels {r['pixels_ms_mean']:.2f}); "
            f"H.264 item {w['ms_per_item']:.1f} ms, video {w['video_kb_mean']:.1f} KiB mean / {w['video_kb_max']:.1f} max, "
            f"{args.n_write} items {w['total_kb']:.0f} KiB"
        )
        print("   per family ms: " + ", ".join(f"{f} {v:.2f}" for f, v in r["per_family_ms_mean"].items()))
    if args.json:
        meta = {"machine": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))

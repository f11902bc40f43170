"""Speed and size of the synthetic video QA set: render time per video, H.264 write time, file sizes.

    .venv/bin/python -m bench.synthqa [--frames 8 16] [--n-render 1000] [--n-write 100] [--json FILE]

Render = scene sampling + pixels (`make_item`), single thread, as a training data loader
calls it; reported as median / mean / p95 per video and per family. Write = `write_dataset`
(render + libx264 encode + JSONL) per item, and the bytes on disk. Also: how well one frame's
target position alone answers `direction` and `position` (the shortcut a compressor that keeps
a single frame would leave a model).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections import Counter, defaultdict
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
    p.add_argument("--n-shortcut", type=int, default=4000, help="scenes for the one-frame shortcut check (0: skip)")
    p.add_argument("--json", help="write the results here as JSON")


def _render_stats(cfg: SynthConfig, n: int) -> dict:
    scene_ms, pixel_ms, per_family = [], [], defaultdict(list)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        scene, _, _, family = make_scene(split_seed("train", i), cfg)
        t1 = time.perf_counter()
        render(scene)
        t2 = time.perf_counter()
        scene_ms.append((t1 - t0) * 1e3)
        pixel_ms.append((t2 - t1) * 1e3)
        per_family[family].append((t2 - t0) * 1e3)
    # CPU time of this process: what one loader core spends, even when other jobs share the cores.
    cpu_ms = (time.process_time() - cpu0) / n * 1e3
    total = np.add(scene_ms, pixel_ms)
    return {
        "total_ms": {"median": float(np.median(total)), "mean": float(total.mean()), "p95": float(np.percentile(total, 95))},
        "cpu_ms_mean": cpu_ms,
        "wall_ms_mean_loop": (time.perf_counter() - wall0) / n * 1e3,
        "scene_ms_mean": statistics.fmean(scene_ms),
        "pixels_ms_mean": statistics.fmean(pixel_ms),
        "per_family_ms_mean": {f: statistics.fmean(v) for f, v in per_family.items()},
    }


def _write_stats(cfg: SynthConfig, n: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        c0 = time.process_time()
        index = write_dataset(d, "test", n, cfg=cfg)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        videos = sorted((Path(d) / "test").iterdir())
        sizes = [p.stat().st_size for p in videos]
        return {
            "ms_per_item": seconds / n * 1e3,
            "cpu_ms_per_item": cpu / n * 1e3,
            "video_kb_mean": statistics.fmean(sizes) / 1024,
            "video_kb_max": max(sizes) / 1024,
            "total_kb": (sum(sizes) + index.stat().st_size) / 1024,
            "jsonl_bytes_per_item": index.stat().st_size / n,
        }


def position_shortcut(cfg: SynthConfig, family: str, frame: int, n: int, bins: int = 8) -> float:
    """Held-out accuracy of answering `family` from the target's position in one frame only.

    A histogram classifier (bins x bins cells of the target's top-left at `frame`) fitted on half
    of n scenes, scored on the other half: how much a single kept frame gives away without motion.
    """
    cells, answers = [], []
    for i in range(n):
        scene, _, answer, _ = make_scene(split_seed("train", i), cfg, family=family)
        target = scene.tracks[0]  # builders put the asked-about shape first
        xy = target.top_left[frame] * bins // (cfg.size - target.size + 1)
        cells.append((int(xy[0]), int(xy[1])))
        answers.append(answer)
    table: dict = defaultdict(Counter)
    for c, a in zip(cells[: n // 2], answers[: n // 2]):
        table[c][a] += 1
    hits = [table[c].most_common(1)[0][0] == a if table[c] else False for c, a in zip(cells[n // 2 :], answers[n // 2 :])]
    return float(np.mean(hits))


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
            f"p95 {r['total_ms']['p95']:.2f} (scene {r['scene_ms_mean']:.2f} + pixels {r['pixels_ms_mean']:.2f}), "
            f"CPU {r['cpu_ms_mean']:.2f} ms/video; "
            f"H.264 item {w['ms_per_item']:.1f} ms (CPU {w['cpu_ms_per_item']:.1f}), video {w['video_kb_mean']:.1f} KiB mean / {w['video_kb_max']:.1f} max, "
            f"{args.n_write} items {w['total_kb']:.0f} KiB"
        )
        print("   per family ms: " + ", ".join(f"{f} {v:.2f}" for f, v in r["per_family_ms_mean"].items()))
        if args.n_shortcut:
            frames_at = {"first": 0, "middle": frames // 2, "last": frames - 1}
            row["position_shortcut"] = {
                fam: {k: position_shortcut(cfg, fam, t, args.n_shortcut) for k, t in frames_at.items()} for fam in ("direction", "position")
            }
            for fam, accs in row["position_shortcut"].items():
                print(f"   one-frame position shortcut, {fam}: " + ", ".join(f"{k} {v:.2f}" for k, v in accs.items()))
    if args.json:
        meta = {"machine": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))

"""`vidsieve bench-batch`: videos/s of the Ray batch pipeline vs decode workers and compression.

Starts its own single-node Ray cluster (`ray start --head`, token auth on, `--cpus` CPUs; the same
helper the tests use, so it never joins or disturbs another cluster), writes a small random
Qwen2.5-VL checkpoint (the sizes of `bench-serve`; no download, answers are noise, the point is
the cost) and `--videos` generated H.264 clips. For each decode-worker count it builds one
`RayEngine`, warms every actor on one video, then for each compression mode (off = strategy none;
on = `--strategy` at `--keep-ratio`) times `RayEngine.run` over all videos, `--repeats` times
(median reported). Actor start-up (model loading) is excluded: it is paid once per job.

Also reported: the per-stage times the answers carry (decode, encode, compress, prefill, generate;
measured inside the actors), and the in-process `Engine.ask_many` loop on the same videos (one
torch thread, like the actors) as a baseline without Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

STAGES = ("decode", "encode", "compress", "prefill", "generate")
QUESTIONS = ("What moves?", "Where does it go?")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", type=int, default=12, help="generated clips in the batch")
    p.add_argument("--video-seconds", type=float, default=6.0, help="length of each 448x336 clip (8 fps)")
    p.add_argument("--fps", type=float, default=2.0, help="sampling fps")
    p.add_argument("--decode-workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--strategy", default="uniform", help="compression strategy for the 'on' mode")
    p.add_argument("--keep-ratio", type=float, default=0.25, help="keep ratio for the 'on' mode")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the benchmark's Ray cluster")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (median reported)")
    p.add_argument("--model", default=None, help="checkpoint dir (default: write a small random Qwen2.5-VL)")
    p.add_argument("--json-out", default=None, help="write the results here as JSON")


def _modes(args) -> dict:
    from pipeline.options import AskOptions

    common = dict(fps=args.fps, max_new_tokens=args.max_new_tokens)
    return {
        "off": AskOptions(**common),
        f"{args.strategy} keep {args.keep_ratio:g}": AskOptions(strategy=args.strategy, keep_ratio=args.keep_ratio, **common),
    }


def _videos(root: Path, n: int, seconds: float) -> list[Path]:
    from pipeline.videogen import moving_square_video

    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(root / f"clip{i:03d}.mp4")
        moving_square_video(out[-1], "h264", width=448, height=336, num_frames=int(seconds * 8), fps=8.0,
                            square_px=64, step_px=(4 + i % 5, 2), seed=i)
    return out


def _stage_means(results: list[list[dict]]) -> dict[str, float]:
    """Mean ms of each stage as the answers report them, measured inside the actors: decode, encode
    and compress per video; prefill and generate per answer (each answer's prefill repeats the
    video prefix it shares with the video's other answers, so the two are not summed per video)."""
    per_video = [a[0]["stats"]["timings_ms"] for a in results]
    per_answer = [x["stats"]["timings_ms"] for a in results for x in a]
    means = {s: statistics.mean(float(t.get(s, 0.0)) for t in per_video) for s in ("decode", "encode", "compress")}
    means |= {s: statistics.mean(float(t.get(s, 0.0)) for t in per_answer) for s in ("prefill", "generate")}
    return {s: round(means[s], 1) for s in STAGES}


def _time_ray(engine, videos, opts, repeats) -> dict:
    from pipeline.ray_stages import Job

    rates, last = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        outcomes = list(engine.run((Job(str(v), QUESTIONS) for v in videos), opts))
        elapsed = time.perf_counter() - t
        rates.append(len(videos) / elapsed)
        last = [o.results for o in outcomes if o.error is None]
        errors = sorted({o.error for o in outcomes if o.error})
    if not last:
        raise RuntimeError(f"every benchmark video failed: {errors[:2]}")
    answers = [a for r in last for a in r]
    return {
        # Videos that failed count in videos/s (their work was done up to the failure); stage
        # times and token counts are over the answered ones.
        "errors": len(videos) - len(last),
        "error_messages": errors[:3],
        "videos_per_s": round(statistics.median(rates), 3),
        "videos_per_s_all": [round(r, 3) for r in rates],
        "stage_ms": _stage_means(last),
        "visual_tokens_before": sum(a["stats"]["tokens_before"] for a in answers) // len(QUESTIONS),
        "visual_tokens_after": sum(a["stats"]["tokens_after"] for a in answers) // len(QUESTIONS),
    }


def _time_in_process(model_dir, videos, opts, repeats) -> float:
    from encoders.errors import VidsieveError
    from pipeline.engine import Engine

    import torch

    # One torch thread, as in the Ray model actors (Ray gives an actor that claims no CPU one OpenMP
    # thread); on this shared 2-core machine two threads ran ~5x slower, oversubscribed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = Engine(model_dir)
    engine.ask_many(videos[0], list(QUESTIONS), opts)  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for v in videos:
            try:
                engine.ask_many(v, list(QUESTIONS), opts)
            except (VidsieveError, ValueError):  # counted as in the Ray runs: the work up to the failure
                pass
        rates.append(len(videos) / (time.perf_counter() - t))
    torch.set_num_threads(threads)
    return round(statistics.median(rates), 3)


def run(args: argparse.Namespace) -> int:
    import ray

    from bench.serve import SMALL_PROCESSOR, SMALL_TEXT, SMALL_VISION
    from pipeline.ray_stages import RayEngine
    from tests.fixtures.ray_cluster import RayHead, client_of
    from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

    modes = _modes(args)
    results: dict = {"machine": {"cpus_visible": os.cpu_count(), "platform": platform.platform(), "ray_cpus": args.cpus},
                     "config": {k: v for k, v in vars(args).items() if k not in ("json_out", "func", "_module")},
                     "ray": [], "in_process": {}}
    with tempfile.TemporaryDirectory(prefix="vidsieve-bench-batch-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model) if args.model else make_tiny_qwen2_5_vl(
            tmp / "small-qwen", processor_overrides=SMALL_PROCESSOR, vision_config=SMALL_VISION, text_config=SMALL_TEXT)
        videos = _videos(tmp / "videos", args.videos, args.video_seconds)
        with RayHead(num_cpus=args.cpus) as head, client_of(head):
            try:
                for workers in args.decode_workers:
                    engine = RayEngine(address=head.address, model_dir=model_dir, decode_workers=workers)
                    for name, opts in modes.items():
                        list(engine.run([_job(videos[0])], opts))  # warm every stage for this mode
                        row = {"decode_workers": workers, "mode": name, **_time_ray(engine, videos, opts, args.repeats)}
                        results["ray"].append(row)
                        print(json.dumps(row), flush=True)
                    engine.shutdown()
            finally:
                ray.shutdown()
        for name, opts in modes.items():
            results["in_process"][name] = _time_in_process(model_dir, videos, opts, args.repeats)
            print(json.dumps({"in_process": name, "videos_per_s": results["in_process"][name]}), flush=True)
    print(_table(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


def _job(video):
    from pipeline.ray_stages import Job

    return Job(str(video), QUESTIONS)


def _table(results: dict) -> str:
    lines = ["| decode workers | compression | videos/s | failed videos | visual tokens (answered videos) | decode ms/video | encode ms/video | compress ms/video | prefill ms/answer | generate ms/answer |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["ray"]:
        ms = r["stage_ms"]
        lines.append(f"| {r['decode_workers']} | {r['mode']} | {r['videos_per_s']:.2f} | {r['errors']} | "
                     f"{r['visual_tokens_after']}/{r['visual_tokens_before']} | " + " | ".join(f"{ms[s]:.0f}" for s in STAGES) + " |")
    for name, rate in results["in_process"].items():
        lines.append(f"| in-process Engine | {name} | {rate:.2f} | | | | | | | |")
    return "\n".join(lines)

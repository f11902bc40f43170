"""`vidsieve bench-serve`: throughput and latency of the HTTP service, compression off vs on.

Starts a real `vidsieve serve` process on 127.0.0.1 (a free port), uploads one generated video once
(POST /v1/files), then for each mode (compression off = strategy none; on = --strategy at --keep-ratio)
and each concurrency level sends closed-loop requests to POST /v1/chat/completions: `concurrency`
clients, each sending its next request as soon as the last one answered. The two modes alternate
round by round (--rounds) so a shared machine's drifting load falls on both. Reports requests/s
(all rounds' requests / their wall time), the per-round figures, and p50/p95 latency, as a table and
as JSON (--json-out).

Without --model it writes a small random Qwen2.5-VL checkpoint (tests/fixtures/tiny_qwen.py with the
sizes below): no weights are downloaded, and answers are noise; the point is the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# "small random": bigger than the unit-test tiny model so the LLM's share of the cost is realistic-ish.
SMALL_VISION = dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                    window_size=112, fullatt_block_indexes=[3])
SMALL_TEXT = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]})
SMALL_PROCESSOR = dict(min_pixels=56 * 56, max_pixels=448 * 336)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint dir (default: write a small random Qwen2.5-VL)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=None, help="requests per round (default: max(4, concurrency))")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level; modes alternate round by round")
    p.add_argument("--strategy", default="uniform", help="compression strategy for the 'on' mode")
    p.add_argument("--keep-ratio", type=float, default=0.25, help="keep ratio for the 'on' mode")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--video-seconds", type=float, default=2.0, help="length of the generated 448x336 test video")
    p.add_argument("--workers", type=int, default=1, help="server worker threads")
    p.add_argument("--json-out", default=None, help="write the results here as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        import httpx  # noqa: F401 - the load generator's client
    except ImportError:
        from encoders.errors import BadRequest

        raise BadRequest("bench-serve needs httpx: pip install -e '.[test]'") from None
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="vidsieve-bench-serve-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model) if args.model else _small_model(tmp)
        video = _video(tmp / "clip.mp4", args.video_seconds)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model_dir), "--port", str(port),
             "--workers", str(args.workers), "--queue-size", str(4 * max(levels)), "--timeout-s", "600", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base, server)
            results = asyncio.run(_measure(base, video, levels, args))
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    report = {"machine": _machine(), "model": str(args.model or "small random Qwen2.5-VL (bench/serve.py SMALL_*)"),
              "video": f"448x336 H.264, {args.video_seconds:g} s, sampled at 2 fps", "max_new_tokens": args.max_new_tokens,
              "workers": args.workers, "results": results}
    print("\n" + _table(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


async def _measure(base: str, video: Path, levels: list[int], args) -> list[dict]:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        r = await http.post("/v1/files", files={"file": (video.name, video.read_bytes(), "video/mp4")})
        r.raise_for_status()
        file_id = r.json()["id"]
        modes = {"off": {"strategy": "none"}, "on": {"strategy": args.strategy, "keep_ratio": args.keep_ratio}}
        for options in modes.values():
            await _one(http, file_id, options, args.max_new_tokens)  # warm-up: first-call costs stay out of the numbers
        results = []
        # Modes alternate round by round within each level, so drifting load on a shared machine hits both alike.
        for concurrency in levels:
            n = args.requests or max(4, concurrency)
            rounds = {mode: [] for mode in modes}
            for _ in range(args.rounds):
                for mode, options in modes.items():
                    rounds[mode].append(await _level(http, file_id, options, args.max_new_tokens, concurrency, n))
            for mode, options in modes.items():
                results.append({"mode": mode, "options": options, "concurrency": concurrency, "requests": n * args.rounds,
                                **_combine(rounds[mode]), "load_avg_1m": round(os.getloadavg()[0], 1)})
            print(_table(results[-2:], header=len(results) == 2), flush=True)
        return results


async def _level(http, file_id: str, options: dict, max_new_tokens: int, concurrency: int, n: int) -> dict:
    """n requests from `concurrency` closed-loop clients: wall time, latencies, visual tokens."""
    latencies: list[float] = []
    tokens: list[tuple[int, int]] = []
    todo = iter(range(n))

    async def client():
        for _ in todo:  # shared iterator: n requests in all
            start = time.perf_counter()
            body = await _one(http, file_id, options, max_new_tokens)
            latencies.append(time.perf_counter() - start)
            tokens.append((body["usage"]["visual_tokens_before"], body["usage"]["visual_tokens_after"]))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"wall_s": time.perf_counter() - start, "latencies": latencies, "tokens": tokens[0]}


def _combine(rounds: list[dict]) -> dict:
    lat = np.array([x for r in rounds for x in r["latencies"]])
    wall = sum(r["wall_s"] for r in rounds)
    return {"requests_per_s": round(len(lat) / wall, 3), "p50_s": round(float(np.percentile(lat, 50)), 3),
            "p95_s": round(float(np.percentile(lat, 95)), 3), "wall_s": round(wall, 2),
            "round_requests_per_s": [round(len(r["latencies"]) / r["wall_s"], 3) for r in rounds],
            "visual_tokens_before": rounds[0]["tokens"][0], "visual_tokens_after": rounds[0]["tokens"][1]}


async def _one(http, file_id: str, options: dict, max_new_tokens: int) -> dict:
    body = {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": file_id}},
                                                      {"type": "text", "text": "What moves, and where does it go?"}]}],
            "max_tokens": max_new_tokens, "vidsieve": options}
    r = await http.post("/v1/chat/completions", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"bench request failed: {r.status_code} {r.text[:300]}")
    return r.json()


def _table(results: list[dict], header: bool = True) -> str:
    lines = ["| compression | concurrency | requests | req/s | req/s per round | p50 s | p95 s | visual tokens | load avg |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"] if header else []
    for r in results:
        label = "off" if r["mode"] == "off" else f"{r['options']['strategy']} keep {r['options']['keep_ratio']:g}"
        per_round = ", ".join(f"{x:.2f}" for x in r["round_requests_per_s"])
        lines.append(f"| {label} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']:.2f} | {per_round} | {r['p50_s']:.2f} | "
                     f"{r['p95_s']:.2f} | {r['visual_tokens_after']}/{r['visual_tokens_before']} | {r['load_avg_1m']} |")
    return "\n".join(lines)


def _small_model(tmp: Path) -> Path:
    from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

    return make_tiny_qwen2_5_vl(tmp / "small-qwen", processor_overrides=SMALL_PROCESSOR,
                                vision_config=SMALL_VISION, text_config=SMALL_TEXT)


def _video(path: Path, seconds: float) -> Path:
    from pipeline.videogen import moving_square_video

    fps = 8.0
    moving_square_video(path, "h264", width=448, height=336, num_frames=int(seconds * fps), fps=fps, square_px=64, step_px=(8, 4))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, server: subprocess.Popen, timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vidsieve serve exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout_s:g} s")


def _machine() -> str:
    import torch

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} threads {torch.get_num_threads()}, no GPU used"

"""`vidsieve bench-compress`: what token compression costs next to the encoder that made the tokens.

For 1k..64k tokens at an LLM width D (default 3584, Qwen2.5-VL-7B; `--width 1536` for 1.5B/3B-class
models), a synthetic video pack is built: tubelets of 16 x 16 merged cells over a static random
background with a moving 4 x 4 blob, a scene cut every 64 tubelets, matching codec signals and a
12-token question. Each strategy runs through `tokencomp.compress` (everything the pipeline pays:
splitting, floors, the strategy, applying the plan) at keep_ratio 0.25; the median of `--repeats`
runs is reported.

Encoder time for the same token count: vidsieve's own `qwen2_5_vl` encoder (the full Qwen2.5-VL
vision tower shape: 32 layers, hidden 1280, random weights) is *measured* on one and two tubelets of
16 x 16 cells (256 and 512 tokens) and scaled linearly to N tokens. Linear scaling is what the
tower does: window attention plus full attention spanning one tubelet, so cost grows with the
number of tubelets. Running it at 64k tokens directly would take hours on a CPU.

`--write` puts the table in docs/benchmarks.md under `## Compression`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tokencomp.plan import DROPPED_MODES

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Compression"
CELLS = 16  # merged cells per side of a tubelet (448 px frames)
DEFAULT_STRATEGIES = ["uniform", "uniform-t", "codec", "temporal", "query", "tome", "divprune", "codec+tome"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="token counts (multiples of 256)")
    p.add_argument("--width", type=int, default=3584, help="LLM width D of the visual tokens")
    p.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    p.add_argument("--keep-ratio", type=float, default=0.25)
    p.add_argument("--dropped", default="absorb", choices=list(DROPPED_MODES),
                   help="count dropped tokens on the most similar kept one (absorb, the pipeline's default) or not")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per strategy and size (median reported)")
    p.add_argument("--divprune-max", type=int, default=16384,
                   help="skip divprune above this many tokens (its greedy loop is sequential)")
    p.add_argument("--encoder-preset", default="qwen2_5_vl", help="encoders.config preset timed for the comparison")
    p.add_argument("--encoder-seconds", nargs=2, type=float, metavar=("S_256", "S_512"), default=None,
                   help="reuse encoder seconds measured earlier for 256 and 512 tokens instead of timing again")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--machine", default=None, help="machine description for the results table")
    p.add_argument("--write", action="store_true", help=f"write the results to docs/benchmarks.md ({SECTION})")


def synthetic_pack(n_tokens: int, width: int, device: str, seed: int = 0):
    """(VisualTokens, CodecSignals, query [12, D]) for a video of n_tokens / 256 tubelets."""
    from encoders.signals import CodecSignals
    from encoders.tokens import VisualTokens

    if n_tokens % (CELLS * CELLS):
        raise SystemExit(f"bench-compress: --tokens must be multiples of {CELLS * CELLS}, got {n_tokens}")
    t = n_tokens // (CELLS * CELLS)
    gen = torch.Generator().manual_seed(seed)
    scenes = torch.randn((t + 63) // 64, CELLS, CELLS, width, generator=gen)
    emb = scenes[torch.arange(t) // 64].clone()  # [T, 16, 16, D]
    emb += 0.05 * torch.randn(emb.shape, generator=gen)
    motion = np.zeros((2 * t, CELLS, CELLS), np.float32)
    for i in range(t):
        x = (i * 2) % (CELLS - 4)
        emb[i, 6:10, x : x + 4] = torch.randn(4, 4, width, generator=gen)
        motion[2 * i : 2 * i + 2, 6:10, x : x + 4] = 4.0
    keyframe = np.zeros(2 * t, bool)
    keyframe[::128] = True
    signals = CodecSignals(
        picture_types=tuple("I" if k else "P" for k in keyframe), motion=motion, keyframe=keyframe,
        cell_px=28, source="mv", codec="h264",
    )
    tokens = VisualTokens.full_grid(emb.reshape(-1, width), (t, CELLS, CELLS), torch.arange(t, dtype=torch.float32))
    query = torch.randn(12, width, generator=gen)
    return tokens.to(device), signals, query.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_compress(tokens, strategy: str, budget, signals, query, repeats: int, device: str, dropped: str = "absorb") -> float:
    """Median seconds of `compress` (an untimed warm-up run first, for inputs up to 4k tokens)."""
    from tokencomp.registry import compress

    if len(tokens) <= 4096:
        compress(tokens, strategy, budget, signals=signals, query=query, dropped=dropped)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        compress(tokens, strategy, budget, signals=signals, query=query, dropped=dropped)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def encoder_seconds_per_token(preset: str, device: str, repeats: int) -> tuple[float, dict[int, float]]:
    """Measured encoder seconds for 1 and 2 tubelets of 16 x 16 cells; returns (s/token, {tokens: s})."""
    from encoders.config import get_preset
    from encoders.vit import VisionEncoder

    torch.manual_seed(0)
    cfg = get_preset(preset)
    model = VisionEncoder(cfg).eval().to(device)
    measured = {}
    for t in (1, 2):
        grid = torch.tensor([[t, 2 * CELLS, 2 * CELLS]])
        px = torch.randn(int(grid.prod()), cfg.patch_dim, device=device)
        times = [torch.arange(t, dtype=torch.float32)]
        model.encode(px, grid, times)  # warm-up
        runs = []
        for _ in range(max(1, repeats)):
            _sync(device)
            t0 = time.perf_counter()
            model.encode(px, grid, times)
            _sync(device)
            runs.append(time.perf_counter() - t0)
        measured[t * CELLS * CELLS] = statistics.median(runs)
    per_token = measured[2 * CELLS * CELLS] / (2 * CELLS * CELLS)
    return per_token, measured


def run(args: argparse.Namespace) -> int:
    from tokencomp.budget import Budget

    budget = Budget(keep_ratio=args.keep_ratio)
    if args.encoder_seconds:
        measured = {256: args.encoder_seconds[0], 512: args.encoder_seconds[1]}
        per_token = measured[512] / 512
        print(f"encoder {args.encoder_preset}: reusing earlier measurement", flush=True)
    else:
        print(f"encoder {args.encoder_preset}: timing 256 and 512 tokens on {args.device} ...", flush=True)
        per_token, measured = encoder_seconds_per_token(args.encoder_preset, args.device, args.repeats)
    print("  " + ", ".join(f"{n} tokens: {s:.2f} s" for n, s in measured.items()) + f" -> {per_token * 1e3:.2f} ms/token")
    rows = []
    for n in args.tokens:
        tokens, signals, query = synthetic_pack(n, args.width, args.device)
        enc_s = per_token * n
        for strategy in args.strategies:
            if "divprune" in strategy and n > args.divprune_max:
                rows.append((n, strategy, None, enc_s))
                print(f"{n:>6} {strategy:<12} skipped (--divprune-max {args.divprune_max})", flush=True)
                continue
            s = time_compress(tokens, strategy, budget, signals, query, args.repeats, args.device, args.dropped)
            rows.append((n, strategy, s, enc_s))
            print(f"{n:>6} {strategy:<12} {s * 1e3:9.1f} ms  {100 * s / enc_s:6.2f}% of encoder ({enc_s:.1f} s)", flush=True)
        del tokens
    text = report(rows, measured, per_token, args)
    print(text)
    if args.write:
        from bench.decode import write_section

        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"wrote {BENCHMARKS_MD} ({SECTION})")
    return 0


def report(rows, measured: dict[int, float], per_token: float, args) -> str:
    machine = args.machine or f"{platform.machine()} {os.cpu_count()} cores, {args.device}"
    sizes = sorted({r[0] for r in rows})
    strategies = list(dict.fromkeys(r[1] for r in rows))
    cell = {(n, s): (c, e) for n, s, c, e in rows}
    lines = [
        SECTION,
        "",
        f"`vidsieve bench-compress` on {machine}; D = {args.width}, keep_ratio = {args.keep_ratio}, dropped = {args.dropped}, "
        f"median of {args.repeats} runs. Target: compression under 3% of encoder time.",
        "",
        f"Encoder time is measured for the `{args.encoder_preset}` preset (random weights) on "
        + " and ".join(f"{n} tokens ({s:.2f} s)" for n, s in sorted(measured.items()))
        + f" and scaled linearly ({per_token * 1e3:.2f} ms/token): window attention plus full attention "
        "within a tubelet grow linearly with the number of tubelets. Cells: compression ms "
        "(% of encoder time).",
        "",
        "| strategy | " + " | ".join(f"{n // 1024}k tokens" for n in sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for s in strategies:
        cells = []
        for n in sizes:
            c, e = cell.get((n, s), (None, per_token * n))
            cells.append("not run" if c is None else f"{c * 1e3:.1f} ms ({100 * c / e:.2f}%)")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("| *encoder (est.)* | " + " | ".join(f"{per_token * n:.1f} s" for n in sizes) + " |")
    return "\n".join(lines) + "\n"

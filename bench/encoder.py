"""`vidsieve bench-encoder`: our `qwen2_5_vl` encoder vs transformers' vision tower, and subset encoding.

Same random weights (a mid-size Qwen2.5-VL-shaped config, no download) and the same flattened
pixel_values go through `Qwen2_5_VisionTransformerPretrainedModel` (sdpa) and our VisionEncoder;
we report LLM tokens/s (merged 2x2 cells) for 8..64 frames, the max abs difference of the outputs,
and the speed-up of encoding a random 25% of cells over encoding all of them. `--attention`
adds a micro-benchmark of the CPU attention strategies (grouped SDPA, per-segment loop, dense
block mask). Runs are interleaved (ours, theirs, ours, ...) and the median is reported, because
other processes share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

DEFAULTS = dict(depth=8, hidden_size=640, num_heads=10, intermediate_size=1728, out_hidden_size=1536,
                window_size=112, fullatt_block_indexes=[3, 7])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64], help="frames per video (even)")
    p.add_argument("--size", type=int, default=224, help="frame side in pixels (multiple of 28)")
    p.add_argument("--depth", type=int, default=DEFAULTS["depth"])
    p.add_argument("--hidden", type=int, default=DEFAULTS["hidden_size"])
    p.add_argument("--heads", type=int, default=DEFAULTS["num_heads"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing each measurement")
    p.add_argument("--subset", type=float, default=0.25, help="fraction of cells for the subset run")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time; cpu: this process's CPU time (steadier when other jobs share the cores; "
                        "use with --threads 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attention", action="store_true", help="also time the CPU attention strategies")
    p.add_argument("--no-compare", action="store_true", help="skip the transformers comparison (subset timing only)")
    p.add_argument("--json", help="write the results here as JSON")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn, device: str, clock) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = clock()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return clock() - t0, out


def _interleaved(fns: dict, repeats: int, device: str, warmup: int = 1, clock=time.perf_counter):
    """Median time per function over `repeats` interleaved rounds, and each function's last output."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            dt, outs[k] = _timed(fn, device, clock)
            times[k].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def _models(args, dtype):
    from transformers import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from encoders.config import from_hf_vision_config
    from encoders.load import convert_hf_visual
    from encoders.vit import VisionEncoder

    torch.manual_seed(0)
    kw = dict(DEFAULTS, depth=args.depth, hidden_size=args.hidden, num_heads=args.heads)
    kw["fullatt_block_indexes"] = [i for i in kw["fullatt_block_indexes"] if i < args.depth] or [args.depth - 1]
    cfg = Qwen2_5_VLVisionConfig(**kw)
    cfg._attn_implementation = "sdpa"
    theirs = Qwen2_5_VisionTransformerPretrainedModel(cfg).eval()
    ours = VisionEncoder(from_hf_vision_config(cfg.to_dict())).eval()
    convert_hf_visual(dict(theirs.state_dict()), ours, source="bench")
    return theirs.to(args.device, dtype), ours.to(args.device, dtype), kw


def _attention_bench(args) -> list[dict]:
    from encoders.attention import get_backend

    rows = []
    heads, d = args.heads, args.hidden // args.heads
    cells = (args.size // 28) ** 2
    for label, seqlens in (
        ("Qwen windows (112 px), 8 tubelets", _window_seqlens(args.size, 8)),
        (f"full per tubelet ({cells * 4} x 8)", [cells * 4] * 8),
    ):
        n = sum(seqlens)
        q, k, v = (torch.randn(n, heads, d) for _ in range(3))
        fns = {name: (lambda name=name: get_backend(name)(q, k, v, seqlens))
               for name in ("sdpa_grouped", "sdpa_loop", "sdpa_masked")}
        med, _ = _interleaved(fns, args.repeats, "cpu", 1, CLOCKS[args.clock])
        rows.append({"segments": label, "tokens": n, **{k: round(v * 1e3, 2) for k, v in med.items()}})
    return rows


def _window_seqlens(size: int, tubelets: int) -> list[int]:
    from encoders.config import get_preset
    from encoders.layout import build_layout

    p = size // 14
    return build_layout(torch.tensor([[tubelets, p, p]]), get_preset("qwen2_5_vl-tiny")).window_seqlens


def run(args) -> int:
    from encoders.errors import BadRequest

    if args.size % 28:
        raise BadRequest(f"--size {args.size} must be a multiple of 28 px")
    if any(f < 2 or f % 2 for f in args.frames):
        raise BadRequest(f"--frames {args.frames}: each must be an even number >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    dtype = getattr(torch, args.dtype)
    theirs, ours, kw = _models(args, dtype)
    p = args.size // 14
    print(f"config: {kw}; frames {args.size}x{args.size} px; {args.device} {args.dtype}; "
          f"torch threads {torch.get_num_threads()}; {args.clock} clock; {platform.processor() or platform.machine()}")
    results = {"config": kw, "size": args.size, "device": args.device, "dtype": args.dtype,
               "threads": torch.get_num_threads(), "clock": args.clock, "rows": [], "subset": [], "attention": []}
    gen = torch.Generator().manual_seed(0)
    if not args.no_compare:
        print("| frames | LLM tokens | transformers tok/s | vidsieve tok/s | speed-up | max abs diff |")
        print("|---|---|---|---|---|---|")
    with torch.no_grad():
        for frames in [] if args.no_compare else args.frames:
            grid = torch.tensor([[frames // 2, p, p]])
            px = torch.randn(int(grid.prod()), ours.config.patch_dim, generator=gen).to(args.device, dtype)
            times = [torch.arange(frames // 2, dtype=torch.float32)]
            tokens = int(grid.prod()) // 4
            med, outs = _interleaved({"theirs": lambda: theirs(px, grid_thw=grid.to(args.device)), "ours": lambda: ours.encode(px, grid, times)},
                                     args.repeats, args.device, args.warmup, clock)
            diff = (outs["theirs"].pooler_output.float() - outs["ours"].embeds.float()).abs().max().item()
            row = {"frames": frames, "tokens": tokens, "transformers_tok_s": tokens / med["theirs"],
                   "vidsieve_tok_s": tokens / med["ours"], "speedup": med["theirs"] / med["ours"], "max_abs_diff": diff}
            results["rows"].append(row)
            print(f"| {frames} | {tokens} | {row['transformers_tok_s']:.0f} | {row['vidsieve_tok_s']:.0f} | "
                  f"{row['speedup']:.2f}x | {diff:.1e} |")
        print(f"\n| frames | full s | subset {args.subset:.0%} s | speed-up |")
        print("|---|---|---|---|")
        for frames in args.frames:
            grid = torch.tensor([[frames // 2, p, p]])
            px = torch.randn(int(grid.prod()), ours.config.patch_dim, generator=gen).to(args.device, dtype)
            times = [torch.arange(frames // 2, dtype=torch.float32)]
            cells = (frames // 2) * (p // 2) ** 2
            mask = torch.zeros(cells, dtype=torch.bool)  # exactly round(subset * cells) random cells
            mask[torch.randperm(cells, generator=gen)[: round(args.subset * cells)]] = True
            mask = mask.view(frames // 2, p // 2, p // 2)
            med, _ = _interleaved({"full": lambda: ours.encode(px, grid, times),
                                "subset": lambda: ours.encode(px, grid, times, cell_mask=[mask])},
                               args.repeats, args.device, args.warmup, clock)
            row = {"frames": frames, "kept_fraction": float(mask.float().mean()), "full_s": med["full"],
                   "subset_s": med["subset"], "speedup": med["full"] / med["subset"]}
            results["subset"].append(row)
            print(f"| {frames} | {med['full']:.3f} | {med['subset']:.3f} ({row['kept_fraction']:.1%} kept) | "
                  f"{row['speedup']:.2f}x |")
    if args.attention:
        results["attention"] = _attention_bench(args)
        print("\n| segments | tokens | sdpa_grouped ms | sdpa_loop ms | sdpa_masked ms |")
        print("|---|---|---|---|---|")
        for r in results["attention"]:
            print(f"| {r['segments']} | {r['tokens']} | {r['sdpa_grouped']} | {r['sdpa_loop']} | {r['sdpa_masked']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0

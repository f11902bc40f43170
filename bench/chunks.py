"""`vidsieve bench-chunks`: memory and time of one long video decoded and encoded whole vs in chunks.

A random Qwen2.5-VL-shaped checkpoint (no download; `tests/fixtures/tiny_qwen.py`, the vision tower
of `bench/llm_stage.py`) and a generated H.264 video with every frame sampled. Each setting runs in
a fresh process (peak RSS is per process): the engine is loaded and warmed on a short clip, then
`Engine.decode_encode` runs once on the long video. Reported: wall time, the rise of peak RSS over
the warmed process's peak (what the long video cost), the peak of numpy allocations seen by
tracemalloc (the frames), and a digest of the tokens so equal results are visible.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VISION = dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, window_size=112, fullatt_block_indexes=[1, 3],
              out_hidden_size=256, initializer_range=0.02)
TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=240, help="frames of the long video (all sampled)")
    p.add_argument("--size", type=int, default=336, help="frame side in pixels (multiple of 28)")
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 64, 16], help="chunk sizes in frames; 0 = whole video")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "VIDEO", "CHUNK"), help=argparse.SUPPRESS)


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(model: str, video: str, chunk: int, threads: int) -> dict:
    import tracemalloc

    import torch

    from pipeline.engine import Engine
    from pipeline.options import AskOptions

    torch.set_num_threads(threads)
    engine = Engine(model)
    short = Path(video).with_name("short.mp4")
    opts = AskOptions(fps=240.0, max_frames=4096, chunk_frames=chunk or None)
    engine.decode_encode(short, opts)  # warm: allocator pools, lazy imports
    base = _rss_peak_mb()
    tracemalloc.start()
    t = time.perf_counter()
    _, enc = engine.decode_encode(video, opts)
    wall = time.perf_counter() - t
    np_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"chunk_frames": chunk or None, "frames": enc.frames, "tokens": len(enc.tokens), "wall_s": round(wall, 2),
            "rss_rise_mb": round(_rss_peak_mb() - base, 1), "numpy_peak_mb": round(np_peak, 1),
            "timings_ms": {k: round(v) for k, v in enc.timings_ms.items()},
            "decode_ms_total": round(enc.chunks["decode_ms"]) if enc.chunks else None,
            "digest": round(float(enc.tokens.embeds.double().sum()), 3)}


def run(args) -> int:
    if args.child:
        model, video, chunk = args.child
        print(json.dumps(_child(model, video, int(chunk), args.threads)))
        return 0
    from pipeline.videogen import moving_square_video
    from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

    root = Path(tempfile.mkdtemp(prefix="bench-chunks-"))
    px = args.size * args.size
    model = make_tiny_qwen2_5_vl(root / "ckpt", vision_config=VISION, text_config=TEXT,
                                 processor_overrides=dict(min_pixels=px, max_pixels=px))
    video = root / "long.mp4"
    moving_square_video(video, width=args.size, height=args.size, num_frames=args.frames, fps=8.0, square_px=48, step_px=(2, 1))
    moving_square_video(root / "short.mp4", width=args.size, height=args.size, num_frames=16, fps=8.0, square_px=48, step_px=(2, 1))
    rows = []
    for chunk in args.chunks:
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "bench-chunks", "--threads", str(args.threads),
                              "--child", str(model), str(video), str(chunk)], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
        if out.returncode:
            raise SystemExit(f"bench-chunks child (chunk {chunk}) failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
            "video": f"{args.frames} frames {args.size}x{args.size} H.264, every frame sampled", "threads": args.threads}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0

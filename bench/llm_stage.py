"""`vidsieve bench-llm`: time to first token and total time of the LLM stage vs keep ratio, and
transformers' own `generate` on the same frames.

A random Qwen2.5-VL-shaped checkpoint of a few hundred MB (no download; built with
`tests/fixtures/tiny_qwen.py`) and a generated 64-frame video, decoded once (decode is not timed).
For each keep ratio: preprocess + vidsieve encoder + compression (`--strategy`, 1.0 = none) +
prefill + greedy generation of exactly `--new-tokens` tokens (the stop token is ignored on both
sides so every run does the same work). Baseline: `Qwen2_5_VLForConditionalGeneration.generate`
from the processor's inputs (its own preprocessing and vision tower included), TTFT measured as
`max_new_tokens=1`. Runs are interleaved and the median reported, because other processes share
this machine's cores.
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

import torch

TEXT = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
            initializer_range=0.02)
VISION = dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, window_size=112, fullatt_block_indexes=[1, 3],
              out_hidden_size=1024, initializer_range=0.02)
QUESTION = "What happens in the video?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=64, help="sampled frames (the video has this many, sampled at its rate)")
    p.add_argument("--size", type=int, default=224, help="frame side in pixels (multiple of 28)")
    p.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    p.add_argument("--strategy", default="uniform", help="tokencomp strategy for keep ratios < 1")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens generated per run")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time; cpu: this process's CPU time (steadier when other jobs share the cores; "
                        "use with --threads 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the results here as JSON")


def _build(root: Path, args):
    from pipeline.videogen import moving_square_video
    from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

    px = args.size * args.size
    model_dir = make_tiny_qwen2_5_vl(root / "ckpt", vision_config=VISION, text_config=TEXT,
                                     processor_overrides=dict(min_pixels=px, max_pixels=px))
    video = root / "video.mp4"
    moving_square_video(video, width=args.size, height=args.size, num_frames=args.frames, fps=8.0, square_px=48, step_px=(3, 2))
    return model_dir, video


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _ours(llm, sampled, keep_ratio: float, strategy: str, new_tokens: int, clock=time.perf_counter) -> tuple[float, float, int, list[int]]:
    """(ttft_s, total_s, visual tokens sent, generated ids) for one run of the LLM stage."""
    from pipeline.sampling import GenerationConfig

    t0 = clock()
    vin = llm.preprocess(sampled.frames, sampled.time_s, sampled.sampled_fps)
    tokens = llm.encode(vin)
    if keep_ratio < 1.0:
        from tokencomp.budget import Budget
        from tokencomp.registry import compress

        tokens = compress(tokens, strategy, Budget(keep_ratio=keep_ratio))
    prefix = llm.prefill_video(tokens, vin.second_per_grid)
    ids, ttft = [], None
    for tok in llm.generate_ids(prefix, QUESTION, GenerationConfig(max_new_tokens=new_tokens)):
        ids.append(tok)
        if ttft is None:
            ttft = clock() - t0
    return ttft, clock() - t0, len(tokens), ids


def _theirs(llm, sampled, new_tokens: int, clock=time.perf_counter) -> tuple[float, list[int]]:
    """(seconds, generated ids) of transformers' processor + generate for `new_tokens` tokens."""
    from transformers.video_utils import VideoMetadata

    t0 = clock()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = llm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    meta = VideoMetadata(total_num_frames=sampled.num_frames, fps=sampled.sampled_fps)
    inp = llm.processor(text=[text], videos=[sampled.frames], return_tensors="pt",
                        videos_kwargs=dict(video_metadata=[meta], do_sample_frames=False)).to(llm.device)
    with torch.inference_mode():
        out = llm.model.generate(**inp, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return clock() - t0, out[0, inp["input_ids"].shape[1]:].tolist()


def run(args) -> int:
    from pipeline.decode import sample_frames
    from pipeline.llm import QwenVL

    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, video = _build(Path(tmp), args)
        size_mb = sum(f.stat().st_size for f in Path(model_dir).iterdir()) / 2**20
        sampled = sample_frames(video, fps=8.0, max_frames=args.frames, max_pixels=None)
        llm = QwenVL.load(model_dir, device=args.device, dtype=torch.float32, keep_hf_vision=True)
    # Every run generates exactly --new-tokens tokens (transformers: min_new_tokens), so no early stop.
    llm.stop_ids = set()

    ours = {r: {"ttft": [], "total": []} for r in args.keep_ratios}
    theirs = {"ttft": [], "total": []}
    sent, same_ids = {}, None
    _ours(llm, sampled, 1.0, args.strategy, 2, clock), _theirs(llm, sampled, 2, clock)  # warm-up
    for _ in range(args.repeats):
        for r in args.keep_ratios:
            ttft, total, n, ids = _ours(llm, sampled, r, args.strategy, args.new_tokens, clock)
            ours[r]["ttft"].append(ttft), ours[r]["total"].append(total)
            sent[r] = n
            if r == 1.0:
                full_ids = ids
        t1, _ = _theirs(llm, sampled, 1, clock)
        tn, their_ids = _theirs(llm, sampled, args.new_tokens, clock)
        theirs["ttft"].append(t1), theirs["total"].append(tn)
        if 1.0 in args.keep_ratios:
            same_ids = full_ids == their_ids

    med = statistics.median
    base_ttft, base_total = med(theirs["ttft"]), med(theirs["total"])
    rows = []
    for r in args.keep_ratios:
        rows.append(dict(keep_ratio=r, visual_tokens=sent[r], ttft_s=med(ours[r]["ttft"]), total_s=med(ours[r]["total"])))
    result = dict(
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        load_avg=os.getloadavg(), clock=args.clock, device=args.device, checkpoint_mb=round(size_mb, 1), frames=sampled.num_frames,
        frame_px=list(sampled.frames.shape[1:3]), strategy=args.strategy, new_tokens=args.new_tokens, repeats=args.repeats,
        transformers=dict(ttft_s=base_ttft, total_s=base_total), vidsieve=rows, same_tokens_as_transformers=same_ids,
    )
    print(f"checkpoint {size_mb:.0f} MB, {sampled.num_frames} frames {sampled.frames.shape[1]}x{sampled.frames.shape[2]}, "
          f"{args.new_tokens} new tokens, median of {args.repeats}, {args.clock} clock, load avg {result['load_avg'][0]:.1f}")
    print(f"{'':>22} {'tokens':>7} {'TTFT s':>8} {'total s':>8} {'TTFT vs none':>13} {'total vs HF':>12}")
    print(f"{'transformers generate':>22} {sent.get(1.0, ''):>7} {base_ttft:8.2f} {base_total:8.2f} {'':>13} {'1.00x':>12}")
    none_ttft = rows[0]["ttft_s"] if args.keep_ratios[0] == 1.0 else None
    for row in rows:
        speed = f"{none_ttft / row['ttft_s']:.2f}x lower" if none_ttft else ""
        print(f"{'vidsieve keep ' + format(row['keep_ratio'], 'g'):>22} {row['visual_tokens']:>7} {row['ttft_s']:8.2f} "
              f"{row['total_s']:8.2f} {speed:>13} {row['total_s'] / base_total:11.2f}x")
    print(f"vidsieve keep 1 generates the same tokens as transformers: {same_ids}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))

"""`vidsieve ask VIDEO QUESTION`: decode -> encode -> compress -> LLM, in process, one answer.

    vidsieve ask clip.mp4 "What happens?" --model DIR --strategy tome --keep-ratio 0.25 --json

A thin shell over `pipeline.engine.Engine`, the object the service and the batch job call too, so
all three give the same answers. The command-line contract (issue 5): `--json` prints one JSON
object as the last stdout line (`pipeline.result.build_result`: answer, output_token_ids, kept,
stats{frames, grid, tokens_before, tokens_after, tokens_per_frame, strategy, budget, timings_ms,
...}); without it the answer is streamed to stdout, then one line of accounting. `--model`
defaults to $VIDSIEVE_MODEL, then to the shipped demo model once it exists.
"""

from __future__ import annotations

import json
import sys
import time
from functools import lru_cache

from pipeline.options import POSITION_MODES, AskOptions, add_weight_arguments


def add_arguments(p) -> None:
    p.add_argument("video", help="path of a video file")
    p.add_argument("question", help="the question about the video")
    p.add_argument("--model", default=None, help="local Qwen2.5-VL checkpoint directory (default: $VIDSIEVE_MODEL)")
    p.add_argument("--strategy", default="none", help="compression strategy, e.g. none, uniform, tome, codec+tome")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--keep-ratio", type=float, default=None, help="keep this fraction of the visual tokens, in (0, 1]")
    budget.add_argument("--tokens-per-frame", type=float, default=None, help="keep this many visual tokens per sampled frame")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--fps", type=float, default=None, help="sample frames at k/F seconds (default 2)")
    frames.add_argument("--num-frames", type=int, default=None, help="sample this many evenly spaced frames instead")
    p.add_argument("--max-frames", type=int, default=64, help="cap on sampled frames (thinned evenly)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="cap on generated tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when temperature > 0")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible answers)")
    p.add_argument("--position-mode", default="keep", choices=list(POSITION_MODES),
                   help="M-RoPE positions of kept tokens: original (keep), renumbered (compact), or merged tokens at their members' mean (centroid)")
    p.add_argument("--codec-placement", default="after", choices=["after", "before"],
                   help="for strategies starting with codec: drop tokens after the encoder, or skip encoding those cells")
    add_weight_arguments(p)
    p.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                   help="long videos: decode the next N frames while encoding the current N (memory bounded by N)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object (answer + accounting) as the last line")


def load_engine(model_dir: str | None, device: str | None = None):
    """The engine for `model_dir` (None: $VIDSIEVE_MODEL, then the demo model), loaded once per process."""
    from pipeline.engine import default_model_dir

    return _engine(str(default_model_dir(model_dir)), device)


@lru_cache(maxsize=2)
def _engine(model_dir: str, device: str | None):
    from transformers.utils import logging as hf_logging

    from pipeline.engine import Engine

    # One answer line on stdout and at most one error line on stderr: no weight-loading progress bars.
    hf_logging.disable_progress_bar()
    return Engine(model_dir, device=device)


def run(args) -> int:
    opts = AskOptions(
        strategy=args.strategy,
        keep_ratio=args.keep_ratio,
        tokens_per_frame=args.tokens_per_frame,
        fps=args.fps,
        num_frames=args.num_frames,
        max_frames=args.max_frames,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        position_mode=args.position_mode,
        codec_placement=args.codec_placement,
        chunk_frames=args.chunk_frames,
        dropped=args.dropped,
        attention=args.attention,
    )
    t = time.perf_counter()
    engine = load_engine(args.model, args.device)
    load_ms = (time.perf_counter() - t) * 1e3

    if args.json:
        result = engine.ask(args.video, args.question, opts)
    else:
        result = None
        for event in engine.ask_stream(args.video, args.question, opts):
            if "delta" in event:
                sys.stdout.write(event["delta"])
                sys.stdout.flush()
            result = event.get("result", result)
    result["stats"]["timings_ms"]["load_model"] = round(load_ms, 3)
    if args.json:
        print(json.dumps(result))
        return 0
    s = result["stats"]
    print()
    print(
        f"[{s['frames']} frames, {s['tokens_after']}/{s['tokens_before']} visual tokens "
        f"({100 * s['keep_ratio']:.0f}%), {s['strategy']} {s['budget']}, {s['timings_ms']['total'] / 1e3:.2f} s]"
    )
    return 0

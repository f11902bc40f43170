"""`vidsieve ask VIDEO QUESTION`: decode -> encode -> compress -> LLM, in process, one answer.

    vidsieve ask clip.mp4 "What happens?" --model DIR --strategy tome --keep-ratio 0.25 --json

The command-line contract (issue 5): `--json` prints one JSON object as the last stdout line
(`pipeline.result.build_result`: answer, output_token_ids, kept, stats{frames, grid, tokens_before,
tokens_after, tokens_per_frame, strategy, budget, timings_ms, ...}); without it the answer is
streamed to stdout, then one line of accounting. `--model` defaults to $VIDSIEVE_MODEL.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from functools import lru_cache

from encoders.errors import BadRequest
from pipeline.options import AskOptions

log = logging.getLogger(__name__)

MODEL_ENV = "VIDSIEVE_MODEL"


def add_arguments(p) -> None:
    p.add_argument("video", help="path of a video file")
    p.add_argument("question", help="the question about the video")
    p.add_argument("--model", default=None, help=f"local Qwen2.5-VL checkpoint directory (default: ${MODEL_ENV})")
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
    p.add_argument("--position-mode", default="keep", choices=["keep", "compact"], help="M-RoPE positions of kept tokens")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object (answer + accounting) as the last line")


def resolve_model(model: str | None) -> str:
    """--model, else $VIDSIEVE_MODEL, else a BadRequest saying how to give one."""
    path = model or os.environ.get(MODEL_ENV)
    if not path:
        raise BadRequest(
            f"no model: pass --model DIR (a local Qwen2.5-VL checkpoint) or set {MODEL_ENV}; "
            "the shipped demo model does not exist yet"
        )
    return path


@lru_cache(maxsize=2)
def load_model(model_dir: str, device: str | None = None):
    """The LLM stage for a checkpoint, loaded once per process."""
    from transformers.utils import logging as hf_logging

    from pipeline.llm import QwenVL

    # One answer line on stdout and at most one error line on stderr: no weight-loading progress bars.
    hf_logging.disable_progress_bar()
    return QwenVL.load(model_dir, device=device)


def _budget(opts: AskOptions):
    from tokencomp.budget import Budget

    return Budget(keep_ratio=opts.keep_ratio, tokens_per_frame=opts.tokens_per_frame)


def ask_video(
    llm,
    video: str,
    question: str,
    opts: AskOptions,
    on_text: Callable[[str], None] | None = None,
    model_label: str = "",
) -> dict:
    """Answer `question` about the video at `video`; returns `build_result`'s dict.

    on_text: called with each piece of the answer as it is generated (streaming).
    """
    from pipeline.decode import sample_frames
    from pipeline.result import build_result
    from pipeline.sampling import GenerationConfig

    names = [s.strip() for s in opts.strategy.split("+")]
    has_budget = opts.keep_ratio is not None or opts.tokens_per_frame is not None
    if names != ["none"] and not has_budget:
        raise BadRequest(f"strategy {opts.strategy!r} needs a budget: pass --keep-ratio R or --tokens-per-frame N")
    gen = GenerationConfig(
        max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed
    )
    timings: dict[str, float] = {}

    t = time.perf_counter()
    cell_px = llm.processor.video_processor.patch_size * llm.merge_size
    sampled = sample_frames(
        video,
        fps=opts.sampling_fps,
        num_frames=opts.num_frames,
        max_frames=opts.max_frames,
        max_pixels=_processor_max_pixels(llm),
        signals_cell_px=cell_px if "codec" in names else None,
    )
    timings["decode"] = _ms(t)

    t = time.perf_counter()
    vin = llm.preprocess(sampled.frames, sampled.time_s, sampled.sampled_fps)
    tokens = llm.encode(vin)
    timings["encode"] = _ms(t)

    budget_label = "all"
    if names != ["none"]:
        from tokencomp.registry import compress

        t = time.perf_counter()
        tokens = compress(tokens, opts.strategy, _budget(opts), signals=sampled.signals, query=llm.question_embeds(question))
        timings["compress"] = _ms(t)
        budget_label = opts.budget_label
    elif has_budget:
        log.warning("strategy 'none' keeps every token; the budget %s is not applied", opts.budget_label)

    prefix = llm.prefill_video(tokens, vin.second_per_grid, mode=opts.position_mode)
    step_times: dict[str, float] = {}
    ids = []
    stream = None
    if on_text is not None:
        from pipeline.sampling import TextStream

        stream = TextStream(llm.tokenizer)
    for tok in llm.generate_ids(prefix, question, gen, step_times):
        ids.append(tok)
        if stream is not None and (piece := stream.push(tok)):
            on_text(piece)
    if stream is not None and (rest := stream.flush()):
        on_text(rest)
    timings["prefill"] = prefix.prefill_ms + step_times.get("question_prefill", 0.0)
    timings["generate"] = step_times.get("generate", 0.0)

    return build_result(
        answer=llm.tokenizer.decode(ids, skip_special_tokens=True),
        output_token_ids=ids,
        tokens=tokens,
        frames=sampled.num_frames,
        frame_times_s=[float(x) for x in sampled.time_s],
        sampled_fps=sampled.sampled_fps,
        strategy=opts.strategy,
        budget=budget_label,
        position_mode=opts.position_mode,
        timings_ms=timings,
        model=model_label or llm.model_dir,
        signal_source=None if sampled.signals is None else sampled.signals.source,
    )


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
    )
    model_dir = resolve_model(args.model)
    t = time.perf_counter()
    llm = load_model(model_dir, args.device)
    load_ms = _ms(t)

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = ask_video(llm, args.video, args.question, opts, on_text=None if args.json else show)
    result["stats"]["timings_ms"]["load_model"] = round(load_ms, 3)
    if args.json:
        print(json.dumps(result))
        return 0
    s = result["stats"]
    total_ms = sum(v for k, v in s["timings_ms"].items() if k != "load_model")
    print()
    print(
        f"[{s['frames']} frames, {s['tokens_after']}/{s['tokens_before']} visual tokens "
        f"({100 * s['keep_ratio']:.0f}%), {s['strategy']} {s['budget']}, {total_ms / 1e3:.2f} s]"
    )
    return 0


def _processor_max_pixels(llm) -> int | None:
    """Decode straight to the processor's pixel cap, so codec-signal cells line up with its grid."""
    size = llm.processor.video_processor.size
    value = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
    return int(value) if value else None


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3

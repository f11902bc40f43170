"""`Engine`: the one object the CLI, the HTTP service and the batch job call.

    engine = Engine("path/to/model")                 # None: $VIDSIEVE_MODEL, then the shipped demo model
    result = engine.ask("clip.mp4", "What moves?", AskOptions(strategy="codec", keep_ratio=0.25))

Stages are plain methods on picklable values, so Ray actors can host them one by one
(`pipeline/ray_stages.py`) and the in-process path simply calls them in order:

    decode(video, opts) -> Decoded          frames, true timestamps, codec signals
    encode(decoded, opts) -> Encoded        the checkpoint's processor + vidsieve's encoder
                                            (codec pre-selection: only the chosen cells are encoded;
                                            with opts.chunk_frames, one run of frames at a time)
    compress(encoded, opts, question) -> Encoded
    answer(encoded, question, opts) -> dict / answer_stream(...) -> Iterator[dict]

In-process, `decode_encode` fuses the first two: with `opts.chunk_frames` the next run of frames
decodes in a background thread while the current run is encoded (`pipeline.prefetch`), so a long
video never holds more than about three runs of frames. The answer dict is `pipeline.result.build_result`'s. Query-aware strategies (`query`) depend on the
question, so `ask_many` compresses and prefills per question for them; every other strategy shares
one decode, encode, compression and prefix KV cache across the questions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from encoders.errors import BadRequest
from encoders.tokens import VisualTokens
from pipeline.decode import sample_frame_chunks
from pipeline.decoder import Decoded, Decoder
from pipeline.options import AskOptions
from pipeline.result import build_result

log = logging.getLogger(__name__)

MODEL_ENV = "VIDSIEVE_MODEL"
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "vidsieve-tiny"
# Strategies whose choice depends on the question: no shared prefix across questions.
QUESTION_AWARE = frozenset({"query"})


def default_model_dir(model_dir: str | Path | None = None) -> Path:
    """`model_dir`, else $VIDSIEVE_MODEL, else the shipped demo model; a BadRequest when none exists."""
    for candidate in (model_dir, os.environ.get(MODEL_ENV) or None):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_dir():
                raise BadRequest(f"model directory {str(path)!r} does not exist or is not a directory")
            return path
    if (DEMO_MODEL_DIR / "config.json").is_file():
        return DEMO_MODEL_DIR
    raise BadRequest(f"no model: pass --model DIR (a local Qwen2.5-VL checkpoint directory) or set ${MODEL_ENV}")


@dataclass(frozen=True)
class Encoded:
    """One video's visual tokens on their way to the LLM, with what the answer reports about them.

    tokens: VisualTokens of this one video (compressed once `compress` ran).
    second_per_grid: seconds one tubelet spans (M-RoPE's temporal scale).
    timings_ms: per stage so far ("decode", "select", "encode", "compress"); with overlapped
        chunks, "decode" is the time spent waiting for frames (decoding hidden behind encoding is
        not counted twice; `chunks["decode_ms"]` has all of it).
    budget_label: the budget applied so far ("all" before compression).
    chunks: None (whole video at once) or {"count", "chunk_frames", "overlapped", "decode_ms"}.
    """

    video: str
    tokens: VisualTokens
    second_per_grid: float
    frames: int
    frame_times_s: tuple[float, ...]
    sampled_fps: float
    signal_source: str | None
    timings_ms: dict = field(default_factory=dict)
    budget_label: str = "all"
    compressed: bool = False
    chunks: dict | None = None


class Engine:
    """A loaded model and the stages around it. Thread-safe for concurrent questions."""

    def __init__(self, model_dir: str | Path | None = None, *, device: str | None = None):
        from pipeline.llm import QwenVL

        self.model_dir = default_model_dir(model_dir)
        t = time.perf_counter()
        self.llm = QwenVL.load(self.model_dir, device=device)
        self.load_ms = _ms(t)
        self.model_name = self.model_dir.name
        self.decoder = Decoder.from_video_processor(self.llm.processor.video_processor)
        self.cell_px = self.decoder.cell_px
        log.info("loaded %s in %.0f ms (cell %d px)", self.model_dir, self.load_ms, self.cell_px)

    # ---- stages ----------------------------------------------------------------------------------

    def decode(self, video: str | Path, opts: AskOptions) -> Decoded:
        """Sample frames (and codec signals when the strategy uses them) at the processor's pixel cap."""
        return self.decoder.decode(video, opts, signals="codec" in _strategy_names(opts))

    def encode(self, decoded: Decoded, opts: AskOptions) -> Encoded:
        """Processor + encoder. With codec pre-selection, only the cells the codec chose are encoded;
        with `opts.chunk_frames`, the frames go through in runs of that many (bounded activations)."""
        s = decoded.sampled
        names = _strategy_names(opts)
        timings = {"decode": decoded.decode_ms}
        mask = None
        budget_label = "all"
        if opts.codec_placement == "before":
            from tokencomp.strategies.codec import select_cells

            vin = self.llm.preprocess(s.frames, s.time_s, s.sampled_fps)
            t = time.perf_counter()
            grid = (vin.grid_thw[0], vin.grid_thw[1] // self.llm.merge_size, vin.grid_thw[2] // self.llm.merge_size)
            mask = select_cells(s.signals, grid, _budget(opts, first_stage_of=len(names)))
            timings["select"] = _ms(t)
            budget_label = opts.budget_label
            t = time.perf_counter()
            tokens, second_per_grid = self.llm.encode(vin, cell_mask=mask), vin.second_per_grid
        else:
            t = time.perf_counter()
            step = self._chunk_step(opts) or max(s.num_frames, 1)
            runs = [self._encode_run(s.frames[i : i + step], s.time_s[i : i + step], s.sampled_fps)
                    for i in range(0, s.num_frames, step)]
            tokens, second_per_grid = VisualTokens.join_time([r[0] for r in runs]), runs[0][1]
        timings["encode"] = _ms(t)
        return Encoded(
            video=decoded.video,
            tokens=tokens,
            second_per_grid=second_per_grid,
            frames=s.num_frames,
            frame_times_s=tuple(float(x) for x in s.time_s),
            sampled_fps=float(s.sampled_fps),
            signal_source=None if s.signals is None else s.signals.source,
            timings_ms=timings,
            budget_label=budget_label,
            compressed=mask is not None and names == ["codec"],
            chunks=None if opts.chunk_frames is None else
            {"count": len(runs), "chunk_frames": opts.chunk_frames, "overlapped": False, "decode_ms": decoded.decode_ms},
        )

    def decode_encode(self, video: str | Path, opts: AskOptions):
        """decode -> (select) -> encode in one call -> (codec signals or None, Encoded).

        With `opts.chunk_frames`, runs of frames are decoded in a background thread one run ahead of
        the encoder (at most ~3 runs of frames alive); the tokens are those `encode(decode(...))`
        gives with the same options.
        """
        if opts.chunk_frames is None:
            decoded = self.decode(video, opts)
            return decoded.sampled.signals, self.encode(decoded, opts)
        from encoders.signals import CodecSignals
        from pipeline.prefetch import Prefetch

        names = _strategy_names(opts)
        self._chunk_step(opts)
        source = sample_frame_chunks(
            video, opts.chunk_frames, fps=opts.sampling_fps, num_frames=opts.num_frames, max_frames=opts.max_frames,
            max_pixels=self.decoder.max_pixels, signals_cell_px=self.cell_px if "codec" in names else None,
        )
        runs, signals, times, encode_ms = [], [], [], 0.0
        with Prefetch(source, depth=1, name="vidsieve-decode-chunks") as chunks:
            for chunk in chunks:
                t = time.perf_counter()
                runs.append(self._encode_run(chunk.frames, chunk.time_s, chunk.sampled_fps))
                encode_ms += _ms(t)
                signals.append(chunk.signals)
                times.extend(float(x) for x in chunk.time_s)
                fps = chunk.sampled_fps
        joined = None if signals[0] is None else CodecSignals.join(signals)
        return joined, Encoded(
            video=str(video),
            tokens=VisualTokens.join_time([r[0] for r in runs]),
            second_per_grid=runs[0][1],
            frames=len(times),
            frame_times_s=tuple(times),
            sampled_fps=float(fps),
            signal_source=None if joined is None else joined.source,
            timings_ms={"decode": chunks.wait_ms, "encode": encode_ms},
            chunks={"count": len(runs), "chunk_frames": opts.chunk_frames, "overlapped": True, "decode_ms": chunks.busy_ms},
        )

    def _encode_run(self, frames, time_s, sampled_fps: float) -> tuple[VisualTokens, float]:
        """One run of consecutive frames -> (its tokens, t from 0, second_per_grid)."""
        vin = self.llm.preprocess(frames, time_s, sampled_fps)
        return self.llm.encode(vin), vin.second_per_grid

    def _chunk_step(self, opts: AskOptions) -> int | None:
        if opts.chunk_frames is not None and opts.chunk_frames % self.llm.temporal_patch_size:
            raise BadRequest(f"chunk_frames must be a multiple of the model's {self.llm.temporal_patch_size}-frame "
                             f"tubelet, got {opts.chunk_frames}")
        return opts.chunk_frames

    def compress(self, encoded: Encoded, opts: AskOptions, signals=None, question: str | None = None) -> Encoded:
        """Apply the request's strategy and budget (the stages pre-selection has not done already)."""
        names = _strategy_names(opts)
        if encoded.compressed or names == ["none"]:
            if names == ["none"] and _has_budget(opts):
                log.warning("strategy 'none' keeps every token; the budget %s is not applied", opts.budget_label)
            return encoded
        from tokencomp.registry import compress

        rest = names[1:] if opts.codec_placement == "before" else names
        query = None
        if QUESTION_AWARE & set(rest):
            if question is None:
                raise ValueError("a question-aware strategy needs the question at compression time")
            query = self.llm.question_embeds(question)
        t = time.perf_counter()
        tokens = compress(encoded.tokens, "+".join(rest), _budget(opts), signals=signals, query=query, dropped=opts.dropped)
        timings = {**encoded.timings_ms, "compress": _ms(t)}
        return replace(encoded, tokens=tokens, timings_ms=timings, budget_label=opts.budget_label, compressed=True)

    def answer(self, encoded: Encoded, question: str, opts: AskOptions, prefix=None) -> dict:
        """Generate the answer for one question over already-compressed tokens."""
        result = None
        for event in self.answer_stream(encoded, question, opts, prefix=prefix, stream_text=False):
            result = event.get("result", result)
        return result

    def answer_stream(
        self, encoded: Encoded, question: str, opts: AskOptions, prefix=None, stream_text: bool = True
    ) -> Iterator[dict]:
        """Yield {"delta": text} pieces as they are generated, then one {"result": answer dict}."""
        from pipeline.sampling import GenerationConfig, TextStream

        if not isinstance(question, str) or not question.strip():
            raise BadRequest("question must be a non-empty string")
        gen = GenerationConfig(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed)
        if prefix is None:
            prefix = self.prefill(encoded, opts)
        steps: dict[str, float] = {}
        ids: list[int] = []
        text = TextStream(self.llm.tokenizer) if stream_text else None
        for tok in self.llm.generate_ids(prefix, question, gen, steps):
            ids.append(tok)
            if text is not None and (piece := text.push(tok)):
                yield {"delta": piece}
        if text is not None and (rest := text.flush()):
            yield {"delta": rest}
        timings = {
            **encoded.timings_ms,
            "prefill": prefix.prefill_ms + steps.get("question_prefill", 0.0),
            "generate": steps.get("generate", 0.0),
        }
        timings["total"] = sum(timings.values())
        yield {
            "result": build_result(
                answer=self.llm.tokenizer.decode(ids, skip_special_tokens=True),
                output_token_ids=ids,
                tokens=encoded.tokens,
                frames=encoded.frames,
                frame_times_s=list(encoded.frame_times_s),
                sampled_fps=encoded.sampled_fps,
                strategy=opts.strategy,
                budget=encoded.budget_label,
                position_mode=opts.position_mode,
                dropped=opts.dropped,
                attention=opts.attention,
                timings_ms=timings,
                model=self.model_name,
                signal_source=encoded.signal_source,
                chunks=encoded.chunks,
                prompt_tokens=len(prefix.ids) + len(self.llm._tokenize(self.llm.render(question)[1])),
            )
        }

    def prefill(self, encoded: Encoded, opts: AskOptions):
        """The question-independent prefix (system turn, user turn start, video), KV cache filled."""
        return self.llm.prefill_video(encoded.tokens, encoded.second_per_grid, mode=opts.position_mode, attention=opts.attention)

    # ---- whole requests ------------------------------------------------------------------------

    def prepare(self, video: str | Path, opts: AskOptions, question: str | None = None) -> Encoded:
        """decode -> (select) -> encode -> compress."""
        signals, encoded = self.decode_encode(video, opts)
        return self.compress(encoded, opts, signals=signals, question=question)

    def ask(self, video: str | Path, question: str, opts: AskOptions | None = None) -> dict:
        opts = opts or AskOptions()
        return self.answer(self.prepare(video, opts, question), question, opts)

    def ask_stream(self, video: str | Path, question: str, opts: AskOptions | None = None) -> Iterator[dict]:
        opts = opts or AskOptions()
        yield from self.answer_stream(self.prepare(video, opts, question), question, opts)

    def ask_many(self, video: str | Path, questions: list[str], opts: AskOptions | None = None) -> list[dict]:
        """Several questions about one video: decode and encode once; compress and prefill once
        unless the strategy is question-aware."""
        opts = opts or AskOptions()
        if not questions:
            return []
        signals, encoded = self.decode_encode(video, opts)
        if QUESTION_AWARE & set(_strategy_names(opts)):
            return [self.answer(self.compress(encoded, opts, signals, question=q), q, opts) for q in questions]
        encoded = self.compress(encoded, opts, signals=signals)
        prefix = self.prefill(encoded, opts)
        return [self.answer(encoded, q, opts, prefix=prefix) for q in questions]


def _strategy_names(opts: AskOptions) -> list[str]:
    from tokencomp.registry import parse_strategy

    names = parse_strategy(opts.strategy)
    if names != ["none"] and not _has_budget(opts):
        raise BadRequest(f"strategy {opts.strategy!r} needs a budget: set keep_ratio or tokens_per_frame")
    if opts.codec_placement == "before" and names[0] != "codec":
        raise BadRequest(f"codec_placement='before' needs a strategy starting with 'codec', got {opts.strategy!r}")
    return names


def _has_budget(opts: AskOptions) -> bool:
    return opts.keep_ratio is not None or opts.tokens_per_frame is not None


def _budget(opts: AskOptions, first_stage_of: int = 1):
    """The request's Budget; `first_stage_of=n` gives the first of n geometric stages' share
    (pre-selection is the first stage of a composed strategy, see tokencomp.budget.stage_targets)."""
    from tokencomp.budget import Budget

    budget = Budget(keep_ratio=opts.keep_ratio, tokens_per_frame=opts.tokens_per_frame)
    if first_stage_of <= 1:
        return budget
    share = 1.0 / first_stage_of
    if opts.keep_ratio is not None:
        return Budget(keep_ratio=opts.keep_ratio**share)
    return budget  # tokens_per_frame: pre-select to the final budget; later stages only merge further


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3

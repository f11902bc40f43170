"""Answer questions about every video in a directory on a Ray cluster: `python -m pipeline.batch`.

    python -m pipeline.batch --input DIR (--question Q | --questions FILE.jsonl) --output OUT.jsonl \
        [--model DIR] [--strategy NAME] [--keep-ratio R | --tokens-per-frame N] [--fps F] [--decode-workers N]

Runs on the Ray cluster it finds (RAY_ADDRESS, which `ray job submit` sets; a `ray start` cluster on
this machine) or starts a local one; the stages run in `pipeline.ray_stages` actor pools.

The output is the job's state, so nothing is lost and nothing is written twice:
- one JSON line per (video, question): `video` (absolute path), `question`, and either `answer` +
  `stats` (the `vidsieve ask --json` stats) or `error` (one line: why this video could not be used);
- each line is written whole by this driver (one write, flush, fsync); at start a trailing partial
  line (a crash mid-write) is cut off;
- pairs already in the file are skipped, so a rerun resumes an interrupted job and adds nothing to
  a finished one; the driver also never writes a pair twice within a run (worker retries included).

Memory stays bounded however large the directory: it is read lazily (os.scandir, twice: once to
count, once to submit), and at most `--max-in-flight` videos are in the pipeline at a time. The set
of pairs already written is kept, one small tuple per output line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from encoders.errors import BadRequest
from pipeline.options import AskOptions

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv"}
)
QUESTION_KEYS = frozenset({"question", "video"})
PROGRESS_EVERY_S = 2.0


class BatchInputError(BadRequest):
    """The input directory, questions file or output file is not usable."""


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Questions:
    """What to ask: `common` for every video, `targeted[name]` only for the video file `name`."""

    common: tuple[str, ...]
    targeted: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def for_video(self, name: str) -> list[str]:
        """This video's questions, each once, common ones first."""
        return list(dict.fromkeys(self.common + self.targeted.get(name, ())))


def read_questions(path: str | Path) -> Questions:
    """Parse a questions JSONL file: {"question": str} or {"video": file name, "question": str} per line."""
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"questions file {path} does not exist or is not a file")
    common: list[str] = []
    targeted: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"questions file {path} line {n}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise BatchInputError(f'{where} is not JSON ({e.msg}); write one {{"question": "..."}} object per line') from None
            if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
                raise BatchInputError(f'{where} needs a non-empty string "question", got {line.strip()[:80]}')
            unknown = sorted(set(item) - QUESTION_KEYS)
            if unknown:
                raise BatchInputError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(QUESTION_KEYS)}")
            video = item.get("video")
            if video is None:
                common.append(item["question"])
            elif isinstance(video, str) and video and Path(video).name == video:
                targeted.setdefault(video, []).append(item["question"])
            else:
                raise BatchInputError(f'{where}: "video" must be a file name in the input directory, got {video!r}')
    if not common and not targeted:
        raise BatchInputError(f"questions file {path} holds no questions")
    return Questions(tuple(common), {k: tuple(v) for k, v in targeted.items()})


def iter_videos(input_dir: str | Path) -> Iterator[Path]:
    """Video files directly in `input_dir` (by suffix, hidden files skipped), read lazily."""
    with os.scandir(input_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in VIDEO_SUFFIXES:
                continue
            if entry.is_file():
                yield Path(os.path.abspath(entry.path))


def check_input_dir(input_dir: str | Path, questions: Questions, questions_file: str | Path | None = None) -> None:
    """Fail early on a missing or empty directory or a question aimed at a video not in it."""
    p = Path(input_dir)
    if not p.is_dir():
        raise BatchInputError(f"input directory {p} does not exist or is not a directory")
    wanted = set(questions.targeted)
    any_video, found = False, set()
    for video in iter_videos(p):
        any_video = True
        if video.name in wanted:
            found.add(video.name)
    if not any_video:
        raise BatchInputError(f"input directory {p} holds no video files (suffixes {sorted(VIDEO_SUFFIXES)})")
    missing = sorted(wanted - found)
    if missing:
        raise BatchInputError(f"questions file {questions_file} names video(s) {missing[:5]} that are not in input directory {p}")


# ---------------------------------------------------------------------------------------------
# The output file


class ResultLog:
    """The append-only JSONL output and the (video, question) pairs it already holds."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.truncated_bytes = repair_tail(self.path)
        self.done: set[tuple[str, str]] = set(read_keys(self.path))
        self.found = len(self.done)
        self._f = open(self.path, "a", encoding="utf-8")

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.done

    def write(self, record: dict) -> bool:
        """Append one whole line and make it durable; False (nothing written) if the pair is already there."""
        key = (record["video"], record["question"])
        if key in self.done:
            return False
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(key)
        return True

    def close(self) -> None:
        self._f.close()


def repair_tail(path: Path) -> int:
    """Cut a trailing partial line (no final newline) off `path`; return the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back in blocks to the last newline: the file may be large, the tail is short.
        end, block = size, 1 << 16
        keep = 0
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            i = f.read(end - start).rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("cut a partial last line (%d bytes) off %s", size - keep, path)
    return size - keep


def read_keys(path: Path) -> Iterator[tuple[str, str]]:
    """(video, question) of every line in an output file, read line by line."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                yield item["video"], item["question"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BatchInputError(
                    f"output file {path} line {n} is not a batch result line; give a new --output or repair that line"
                ) from None


# ---------------------------------------------------------------------------------------------
# Progress


@dataclass
class Progress:
    """Counts for the progress lines and the summary (stderr)."""

    total_pairs: int
    total_videos: int
    pairs: int = 0
    videos: int = 0
    errors: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def add(self, records: list[dict]) -> None:
        """Count one video's lines; its visual tokens once (its questions share them, except with a
        question-aware strategy, where the first question's count stands for the video)."""
        self.videos += 1
        self.pairs += len(records)
        self.errors += sum("error" in r for r in records)
        answered = [r for r in records if "error" not in r]
        if answered:
            self.tokens_before += int(answered[0]["stats"].get("tokens_before", 0))
            self.tokens_after += int(answered[0]["stats"].get("tokens_after", 0))

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.videos / elapsed
        left = self.total_videos - self.videos
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (
            f"batch: {self.pairs}/{self.total_pairs} pairs, {self.videos}/{self.total_videos} videos, "
            f"{rate:.2f} videos/s, {self.errors} errors, ETA {eta}"
        )

    def maybe_print(self) -> None:
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S or self.videos == self.total_videos:
            self._last = now
            print(self.line(), file=sys.stderr, flush=True)

    def summary(self) -> dict:
        elapsed = time.monotonic() - self.started
        return {
            "videos": self.videos,
            "pairs_written": self.pairs,
            "errors": self.errors,
            "seconds": round(elapsed, 3),
            "videos_per_s": round(self.videos / elapsed, 4) if elapsed > 0 else None,
            "visual_tokens_before": self.tokens_before,
            "visual_tokens_after": self.tokens_after,
        }


# ---------------------------------------------------------------------------------------------
# The job


def plan(input_dir: Path, questions: Questions, done: ResultLog) -> Iterator[tuple[Path, list[str]]]:
    """(video, questions not yet in the output) for each video with something left to ask, lazily."""
    for video in iter_videos(input_dir):
        todo = [q for q in questions.for_video(video.name) if (str(video), q) not in done]
        if todo:
            yield video, todo


def records_for(outcome) -> list[dict]:
    """The output lines of one video's Outcome."""
    video = outcome.job.video
    if outcome.error is not None:
        return [{"video": video, "question": q, "error": outcome.error} for q in outcome.job.questions]
    return [
        {"video": video, "question": q, "answer": r["answer"], "stats": r["stats"]}
        for q, r in zip(outcome.job.questions, outcome.results, strict=True)
    ]


def options_from_args(args: argparse.Namespace) -> AskOptions:
    """The request's options, checked here so a bad strategy or budget is one error, not a line per video."""
    from tokencomp.registry import parse_strategy

    options = _options(args)
    if parse_strategy(options.strategy) != ["none"] and options.keep_ratio is None and options.tokens_per_frame is None:
        raise BatchInputError(f"--strategy {options.strategy} needs a budget: add --keep-ratio R or --tokens-per-frame N")
    return options


def _options(args: argparse.Namespace) -> AskOptions:
    return AskOptions.from_dict(
        {
            "strategy": args.strategy,
            "keep_ratio": args.keep_ratio,
            "tokens_per_frame": args.tokens_per_frame,
            "fps": args.fps,
            "max_frames": args.max_frames,
            "max_new_tokens": args.max_new_tokens,
        }
    )


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if args.question is not None and not args.question.strip():
        raise BatchInputError("--question must not be empty")
    questions = Questions((args.question,)) if args.question is not None else read_questions(args.questions)
    input_dir = Path(args.input)
    check_input_dir(input_dir, questions, args.questions)
    out = ResultLog(args.output)
    try:
        total_videos = total_pairs = 0
        for _, todo in plan(input_dir, questions, out):
            total_videos += 1
            total_pairs += len(todo)
        print(
            f"batch: {total_pairs} pairs over {total_videos} videos to do; {out.found} already in {out.path}"
            + (f" (cut a {out.truncated_bytes}-byte partial line)" if out.truncated_bytes else ""),
            file=sys.stderr, flush=True,
        )
        if total_pairs == 0:
            return 0
        from pipeline.ray_stages import Job, RayEngine

        engine = RayEngine(
            address=args.address,
            model_dir=args.model,
            decode_workers=args.decode_workers,
            encode_workers=args.encode_workers,
            answer_workers=args.answer_workers,
            torch_threads=args.torch_threads,
        )
        try:
            print(f"batch: workers {json.dumps(engine.worker_pids())} model {engine.model_name}", file=sys.stderr, flush=True)
            progress = Progress(total_pairs=total_pairs, total_videos=total_videos)
            jobs = (Job(str(video), tuple(todo)) for video, todo in plan(input_dir, questions, out))
            for outcome in engine.run(jobs, options, max_in_flight=args.max_in_flight):
                records = [r for r in records_for(outcome) if out.write(r)]
                progress.add(records)
                progress.maybe_print()
        finally:
            engine.shutdown()
        summary = progress.summary()
        ratio = f" ({summary['visual_tokens_after'] / summary['visual_tokens_before']:.1%})" if summary["visual_tokens_before"] else ""
        print(
            f"batch: done: {summary['videos']} videos, {summary['pairs_written']} lines, {summary['errors']} errors, "
            f"{summary['seconds']:.1f} s, {summary['videos_per_s']} videos/s, visual tokens "
            f"{summary['visual_tokens_before']} -> {summary['visual_tokens_after']}{ratio}",
            file=sys.stderr, flush=True,
        )
        print("batch: summary " + json.dumps(summary), file=sys.stderr, flush=True)
        return 0
    finally:
        out.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="directory of videos (files directly in it)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--question", help="one question asked about every video")
    which.add_argument("--questions", help='JSONL file: {"question": ...} per line, or {"video": NAME, "question": ...}')
    parser.add_argument("--output", required=True, help="JSONL results; an existing file is resumed, never rewritten")
    parser.add_argument("--model", default=None, help="checkpoint directory (default $VIDSIEVE_MODEL, then the demo model)")
    parser.add_argument("--strategy", default="none", help="compression strategy (default: none)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--keep-ratio", type=float, default=None, help="keep this fraction of visual tokens")
    budget.add_argument("--tokens-per-frame", type=float, default=None, help="keep this many visual tokens per frame")
    parser.add_argument("--fps", type=float, default=None, help="sampling rate (default 2)")
    parser.add_argument("--max-frames", type=int, default=None, help="cap on sampled frames per video (default 64)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer (default 32)")
    parser.add_argument("--decode-workers", type=int, default=1, help="decode actors (one CPU each)")
    parser.add_argument("--encode-workers", type=int, default=1, help="encoder actors (a GPU share each when the cluster has GPUs)")
    parser.add_argument("--answer-workers", type=int, default=1, help="LLM actors (a GPU share each when the cluster has GPUs)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="videos in the pipeline at once (default 2 per actor)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads in each model actor")
    parser.add_argument("--address", default=None, help='Ray cluster (default: RAY_ADDRESS, a local `ray start` cluster, else a new one; "local" = new)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.batch", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipeline.cli import run_guarded

    return run_guarded(run, args, prog="batch", interrupted_hint="; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())

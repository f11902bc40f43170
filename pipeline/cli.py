"""`vidsieve` command line: a registry of subcommands, and the one place errors become one line.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`;
`SUBCOMMANDS` maps its name to that module, imported only when the subcommand is used so
`vidsieve --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from encoders.errors import VidsieveError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.cmd_demo", "ask the demo model about generated videos, with and without token compression"),
    "demo-codec": ("pipeline.cmd_demo_codec", "generate a video, decode it with codec signals and report what moved"),
    "probe": ("pipeline.cmd_probe", "decode a video and print its frames, timestamps and codec signals"),
    "bench-decode": ("bench.decode", "benchmark decord vs PyAV sampling and motion-vector export"),
    "ask": ("pipeline.cmd_ask", "ask a question about a video: decode, encode, compress, answer"),
    "bench-llm": ("bench.llm_stage", "benchmark the LLM stage's time to first token vs keep ratio against transformers generate"),
    "make-dataset": ("pipeline.cmd_make_dataset", "write a split of the synthetic video QA set (H.264 videos + JSONL)"),
    "bench-encoder": ("bench.encoder", "benchmark our Qwen2.5-VL vision encoder vs transformers, and subset encoding"),
    "bench-compress": ("bench.compress", "benchmark token compression overhead per strategy against encoder time"),
    "bench": ("pipeline.bench_accuracy", "accuracy vs visual tokens per frame for every strategy and budget"),
    "train-demo": ("pipeline.train_demo", "train the vidsieve-tiny demo model on synthetic video QA (resumable)"),
    "serve": ("serve.cmd_serve", "start the HTTP service: web page, /v1/ask, OpenAI-compatible /v1/chat/completions"),
    "bench-serve": ("bench.serve", "benchmark the HTTP service: requests/s and p50/p95 latency, compression off vs on"),
    "batch": ("pipeline.batch", "answer questions about every video in a directory on a Ray cluster (resumable JSONL)"),
    "bench-batch": ("bench.batch", "benchmark the Ray batch job: videos/s vs decode workers, compression off vs on"),
    "bench-chunks": ("bench.chunks", "benchmark one long video decoded and encoded whole vs in chunks: memory and time"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidsieve", description="Ask questions about videos, cheaply.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main(); --help on a subcommand imports just that module.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # The subcommand is the first word that names one; only its module is imported, and it adds
    # its arguments before parsing (so `vidsieve ask --help` lists them).
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        sub_parser = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
        module.add_arguments(sub_parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_guarded(module.run, args)


def run_guarded(run, args, prog: str = "vidsieve", interrupted_hint: str = "") -> int:
    """Run a command; what users cause becomes one line on stderr (exit 2), anything else one line too."""
    try:
        return int(run(args) or 0)
    except VidsieveError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{interrupted_hint}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("VIDSIEVE_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {e} (set VIDSIEVE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`vidsieve bench`: accuracy against visual tokens per frame, for every strategy and budget.

    vidsieve bench --dataset synthetic --limit 140 --out runs/bench
    vidsieve bench --model DIR --dataset mvbench.jsonl --strategies uniform,codec --keep-ratios 1,0.25 --out OUT

Each dataset item is decoded and encoded once (codec signals included); every (strategy, budget)
then compresses those same tokens and answers. Per-answer records go to OUT/items.jsonl as they
are made, so an interrupted run resumes where it stopped; the table is aggregated from them into
OUT/results.json, OUT/results.csv, OUT/results.md (a Markdown table) and OUT/accuracy_vs_tokens.png.
Each row carries its accuracy's 95% Wilson interval and, when `none` ran on the same items, the
paired comparison with it (accuracy relative to full tokens; items lost and gained).

Datasets: "synthetic" writes the held-out test split of `pipeline/synthqa.py` (real H.264 files)
under OUT/dataset; or a JSONL file of {"video": path, "question": str, "options": [...]?,
"answer": str, "family"?: str}, video paths relative to the file (MVBench / Video-MME exports).
Multiple choice is scored by option letter or option text, open answers by normalized match
(`pipeline/scoring.py`). `--options-in-prompt` lists the lettered options in the prompt (for
models that answer with a letter); the demo model answers with the option's words.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from encoders.errors import BadRequest, VidsieveError
from pipeline.options import EVERY_FRAME_FPS, AskOptions, add_weight_arguments
from pipeline.scoring import is_correct, options_prompt

DEFAULT_KEEP_RATIOS = (1.0, 0.5, 0.25, 0.1)


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model directory (default: $VIDSIEVE_MODEL, then the demo model)")
    p.add_argument("--dataset", required=True, help="'synthetic' (held-out test split) or a JSONL file")
    p.add_argument("--strategies", default=None, help="comma-separated strategies (default: every registered one)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--keep-ratios", default=None, help="comma-separated keep ratios (default 1,0.5,0.25,0.1)")
    budget.add_argument("--tokens-per-frame", default=None, help="comma-separated tokens-per-frame budgets")
    p.add_argument("--limit", type=int, default=None, help="use the first N items (synthetic default: 140)")
    p.add_argument("--fps", type=float, default=None, help="sampling fps (default: every frame)")
    p.add_argument("--max-frames", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--options-in-prompt", action="store_true", help="list lettered options in the prompt")
    add_weight_arguments(p)
    p.add_argument("--out", required=True, help="output directory (resumable)")


def budgets_from(args) -> list[dict]:
    """[{"keep_ratio": r} | {"tokens_per_frame": n}, ...] from the command line."""
    try:
        if args.tokens_per_frame:
            return [{"tokens_per_frame": float(x)} for x in args.tokens_per_frame.split(",")]
        ratios = [float(x) for x in args.keep_ratios.split(",")] if args.keep_ratios else list(DEFAULT_KEEP_RATIOS)
    except ValueError as e:
        raise BadRequest(f"bench: budgets must be comma-separated numbers ({e})") from None
    return [{"keep_ratio": r} for r in ratios]


def load_items(dataset: str, out: Path, limit: int | None) -> list[dict]:
    """Items with absolute video paths; 'synthetic' writes (or reuses) the test split under out/dataset."""
    if dataset == "synthetic":
        from pipeline.synth_dataset import write_dataset
        from pipeline.synthqa import SynthConfig

        n = limit or 140
        index = out / "dataset" / "test.jsonl"
        if not index.exists() or sum(1 for _ in open(index)) < n:
            # Same frames and size as the demo model was trained on (see pipeline/train_demo.py).
            from pipeline.train_demo import DemoRecipe

            r = DemoRecipe()
            write_dataset(out / "dataset", "test", n, cfg=SynthConfig(frames=r.frames, size=r.size), overwrite=True)
        path = index
    else:
        path = Path(dataset)
        if not path.is_file():
            raise BadRequest(f"bench: dataset {dataset!r} is neither 'synthetic' nor a JSONL file")
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                video, question, answer = rec["video"], rec["question"], str(rec["answer"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise BadRequest(f"{path}:{lineno}: not a dataset line with video, question, answer ({e})") from None
            options = rec.get("options") or None
            if options is not None and answer not in options:
                raise BadRequest(f"{path}:{lineno}: answer {answer!r} is not one of the options {options}")
            items.append({"id": lineno, "video": str((path.parent / video).resolve()), "question": question,
                          "options": options, "answer": answer, "family": rec.get("family", "all")})
            if limit and len(items) >= limit:
                break
    if not items:
        raise BadRequest(f"bench: dataset {path} has no items")
    return items


def config_key(strategy: str, budget: dict) -> str:
    if not budget:
        return f"{strategy}|all"
    (name, value), = budget.items()
    return f"{strategy}|{name}={value:g}"


def _drop_partial_line(path: Path) -> str:
    """Cut a last line left unfinished by an interruption (it is redone); return the whole lines."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    return text


def run_bench(engine, items, strategies, budgets, out: Path, fps, max_frames, max_new_tokens, options_in_prompt,
              dropped: str = "absorb", attention: str = "proportional") -> list[dict]:
    """Answer every (item, strategy, budget) not yet in out/items.jsonl; return all records.

    dropped / attention: `AskOptions` fields, the same for every answer of the run (`check_settings`
    keeps a resumed run from mixing them)."""
    records_path = out / "items.jsonl"
    done = {}
    if records_path.exists():
        text = _drop_partial_line(records_path)
        for line in text.splitlines():
            rec = json.loads(line)
            done[(rec["item"], rec["config"])] = rec
    # `none` keeps every token whatever the budget: run it once, without one.
    configs = [(s, b) for s in strategies for b in (budgets if s != "none" else [{}])]
    total = len(items) * len(configs)
    progress = Progress(total, already=sum(1 for i in items for s, b in configs if (i["id"], config_key(s, b)) in done))
    base = dict(fps=fps if fps else EVERY_FRAME_FPS, max_frames=max_frames, max_new_tokens=max_new_tokens)
    with open(records_path, "a", encoding="utf-8") as sink:
        for item in items:
            todo = [(s, b) for s, b in configs if (item["id"], config_key(s, b)) not in done]
            if not todo:
                continue
            prompt = options_prompt(item["question"], item["options"]) if options_in_prompt and item["options"] else item["question"]
            try:
                # Decode once with codec signals (any strategy may use them), encode once at full grid.
                decoded = engine.decode(item["video"], AskOptions(strategy="codec", keep_ratio=1.0, **base))
                full = engine.encode(decoded, AskOptions(**base))
            except VidsieveError as e:
                for s, b in todo:
                    rec = {"item": item["id"], "config": config_key(s, b), "strategy": s, **b, "error": str(e), "family": item["family"]}
                    sink.write(json.dumps(rec) + "\n")
                    done[(item["id"], rec["config"])] = rec
                    progress.step()
                continue
            for s, b in todo:
                opts = AskOptions(strategy=s, **b, **base, dropped=dropped, attention=attention)
                t = time.perf_counter()
                enc = engine.compress(full, opts, signals=decoded.sampled.signals, question=prompt)
                result = engine.answer(enc, prompt, opts)
                st = result["stats"]
                rec = {
                    "item": item["id"], "config": config_key(s, b), "strategy": s, **b, "family": item["family"],
                    "correct": is_correct(result["answer"], item["answer"], item["options"]),
                    "prediction": result["answer"], "answer": item["answer"],
                    "tokens_before": st["tokens_before"], "tokens_after": st["tokens_after"], "frames": st["frames"],
                    "ms": st["timings_ms"]["total"], "ms_after_encode": (time.perf_counter() - t) * 1e3,
                }
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                done[(item["id"], rec["config"])] = rec
                progress.step()
    progress.close()
    wanted = {(i["id"], config_key(s, b)) for i in items for s, b in configs}
    return [r for k, r in done.items() if k in wanted]


def check_settings(out: Path, settings: dict) -> None:
    """Record the run's settings in out/settings.json; a resumed run must use the same ones."""
    path = out / "settings.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            what = ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise BadRequest(f"bench: {out} holds answers made with other settings ({what}); use another --out")
        return
    path.write_text(json.dumps(settings, indent=1) + "\n")


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and at 0 or n correct)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_with_full(recs: list[dict], full: dict[str, bool]) -> dict:
    """Compare a config's answers with `none`'s on the items both answered.

    relative_to_full: accuracy over accuracy of `none` on those items; lost / gained: items `none`
    got right and this config wrong / the other way round (what a paired test looks at).
    """
    pairs = [(full[r["item"]], r["correct"]) for r in recs if "error" not in r and r["item"] in full]
    base, here = sum(a for a, _ in pairs), sum(b for _, b in pairs)
    return {"relative_to_full": round(here / base, 4) if base else None,
            "lost": sum(a and not b for a, b in pairs), "gained": sum(b and not a for a, b in pairs)}


def aggregate(records: list[dict]) -> list[dict]:
    """One row per (strategy, budget): accuracy (with its 95% interval) overall and per family,
    tokens, latency, and the paired comparison with `none` when it ran."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["config"]].append(r)
    full = {r["item"]: r["correct"] for r in groups.get(config_key("none", {}), []) if "error" not in r}
    rows = []
    for key, recs in groups.items():
        ok = [r for r in recs if "error" not in r]
        fam: dict[str, list[bool]] = defaultdict(list)
        for r in ok:
            fam[r["family"]].append(r["correct"])
        frames = sum(r["frames"] for r in ok) or 1
        first = recs[0]
        correct = sum(r["correct"] for r in ok)
        lo, hi = wilson_interval(correct, len(ok))
        rows.append({
            "strategy": first["strategy"],
            "keep_ratio": round(sum(r["tokens_after"] for r in ok) / max(1, sum(r["tokens_before"] for r in ok)), 4),
            "budget": key.split("|", 1)[1],
            "tokens_per_frame": round(sum(r["tokens_after"] for r in ok) / frames, 3),
            "accuracy": round(correct / max(1, len(ok)), 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "n": len(ok),
            "errors": len(recs) - len(ok),
            **(paired_with_full(recs, full) if full else {}),
            "ms_per_video": round(sum(r["ms"] for r in ok) / max(1, len(ok)), 2),
            "ms_after_encode": round(sum(r["ms_after_encode"] for r in ok) / max(1, len(ok)), 2),
            "families": {f: round(sum(v) / len(v), 4) for f, v in sorted(fam.items())},
        })
    return sorted(rows, key=lambda r: (r["strategy"], -r["tokens_per_frame"]))


def markdown_table(rows: list[dict], families: list[str] | None = None) -> str:
    """The results as a Markdown table: accuracy with its 95% interval, the paired comparison with
    `none`, then per-family accuracy (all families unless `families` names some)."""
    families = families if families is not None else sorted({f for r in rows for f in r["families"]})
    paired = any("relative_to_full" in r for r in rows)
    head = ["strategy", "budget", "tokens/frame", "accuracy", "95% CI"] + (["vs full", "lost/gained"] if paired else []) \
        + families + ["ms/video"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["strategy"], r["budget"], f"{r['tokens_per_frame']:.2f}", f"{r['accuracy']:.3f}",
                 f"{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}"]
        if paired:
            rel = r.get("relative_to_full")
            cells += ["" if rel is None else f"{rel:.1%}", f"{r.get('lost', '')}/{r.get('gained', '')}"]
        cells += ["" if f not in r["families"] else f"{r['families'][f]:.2f}" for f in families]
        cells.append(f"{r['ms_per_video']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    families = sorted({f for r in rows for f in r["families"]})
    cols = ["strategy", "budget", "keep_ratio", "tokens_per_frame", "accuracy", "ci95_low", "ci95_high", "n", "errors",
            "relative_to_full", "lost", "gained", "ms_per_video", "ms_after_encode"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + [f"acc_{x}" for x in families])
        for r in rows:
            flat = {**r, "ci95_low": r["ci95"][0], "ci95_high": r["ci95"][1]}
            w.writerow([flat.get(c, "") for c in cols] + [r["families"].get(x, "") for x in families])
    (out / "results.md").write_text(markdown_table(rows))
    plot(rows, out / "accuracy_vs_tokens.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    strategies = sorted({r["strategy"] for r in rows})
    for k, s in enumerate(strategies):
        pts = sorted((r["tokens_per_frame"], r["accuracy"], r["ms_per_video"], *r["ci95"]) for r in rows if r["strategy"] == s)
        x = [p[0] for p in pts]
        # 95% intervals as error bars, each strategy nudged sideways a little so the bars stay apart
        nudge = [v * 1.025 ** (k - (len(strategies) - 1) / 2) for v in x]
        err = [[p[1] - p[3] for p in pts], [p[4] - p[1] for p in pts]]
        ax1.errorbar(nudge, [p[1] for p in pts], yerr=err, marker="o", capsize=2, elinewidth=0.8, label=s)
        ax2.plot(x, [p[2] for p in pts], marker="o", label=s)
    for r in rows:
        if r["strategy"] == "none":  # the full-token accuracy every budget is measured against
            ax1.axhline(r["accuracy"], color="grey", linestyle="--", linewidth=0.8)
    ax1.set(xlabel="visual tokens per frame", ylabel="accuracy (95% interval)", title="accuracy vs tokens per frame", xscale="log")
    ax2.set(xlabel="visual tokens per frame", ylabel="ms per video (decode to answer)", title="latency", xscale="log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({r["tokens_per_frame"] for r in rows}))  # the measured budgets, as plain numbers
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Progress:
    """A one-line progress bar on stderr: done/total, rate, ETA."""

    def __init__(self, total: int, already: int = 0):
        self.total, self.done, self.t0, self.start = total, already, time.monotonic(), already

    def step(self) -> None:
        self.done += 1
        rate = (self.done - self.start) / max(1e-9, time.monotonic() - self.t0)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * self.done / max(1, self.total))
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {rate:.1f}/s ETA {eta:.0f}s ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def run(args) -> int:
    from pipeline.engine import Engine
    from tokencomp.registry import list_strategies, parse_strategy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strategies = args.strategies.split(",") if args.strategies else list_strategies()
    for s in strategies:
        parse_strategy(s)
    budgets = budgets_from(args)
    items = load_items(args.dataset, out, args.limit)
    engine = Engine(args.model)
    settings = {"model": str(engine.model_dir), "dropped": args.dropped, "attention": args.attention, "fps": args.fps,
                "max_frames": args.max_frames, "max_new_tokens": args.max_new_tokens, "options_in_prompt": args.options_in_prompt}
    check_settings(out, settings)
    records = run_bench(engine, items, strategies, budgets, out, args.fps, args.max_frames, args.max_new_tokens,
                        args.options_in_prompt, dropped=args.dropped, attention=args.attention)
    rows = aggregate(records)
    for r in rows:
        r.update(dropped=args.dropped, attention=args.attention)
    write_outputs(rows, out)
    print(f"{'strategy':<12} {'budget':<22} {'tok/frame':>9} {'accuracy':>8} {'n':>5} {'ms/video':>9}")
    for r in rows:
        print(f"{r['strategy']:<12} {r['budget']:<22} {r['tokens_per_frame']:>9.2f} {r['accuracy']:>8.3f} {r['n']:>5} {r['ms_per_video']:>9.1f}")
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'results.md'}, {out / 'accuracy_vs_tokens.png'}")
    return 0

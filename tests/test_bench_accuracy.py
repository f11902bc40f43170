"""`vidsieve bench`: scoring rules, outputs, resume, bad datasets (tiny random Qwen2.5-VL, real H.264)."""

from __future__ import annotations

import csv
import json

import pytest

from pipeline.bench_accuracy import aggregate, markdown_table, wilson_interval
from pipeline.cli import main
from pipeline.scoring import is_correct, normalize_answer, option_letter, options_prompt
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl


@pytest.mark.parametrize(
    "prediction, answer, options, expected",
    [
        ("B", "right", ["left", "right"], True),
        ("(b)", "right", ["left", "right"], True),
        ("Answer: A", "right", ["left", "right"], False),
        ("B. left", "right", ["left", "right"], True),  # the letter decides
        ("a square", "square", None, True),  # an article is not option A
        ("top - left", "top-left", None, True),
        ("The Right.", "right", ["left", "right"], True),
        ("up", "down", ["up", "down"], False),
        ("", "down", ["up", "down"], False),
    ],
)
def test_scoring(prediction, answer, options, expected):
    assert is_correct(prediction, answer, options) is expected


def test_scoring_helpers():
    assert normalize_answer("  The top-left  CORNER! ") == "top left corner"
    assert option_letter("C", 2) is None  # only two options
    assert options_prompt("where?", ["a", "b"]).splitlines() == ["where?", "(A) a", "(B) b", "Answer with the option's letter."]
    with pytest.raises(ValueError, match="not one of the options"):
        is_correct("x", "z", ["x", "y"])


@pytest.mark.parametrize("correct, n, lo, hi", [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0)])
def test_wilson_interval_matches_the_textbook_values(correct, n, lo, hi):
    got = wilson_interval(correct, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def _record(item, strategy, correct, family="f", budget="all", error=False):
    rec = {"item": item, "config": f"{strategy}|{budget}", "strategy": strategy, "family": family}
    if error:
        return {**rec, "error": "bad video"}
    return {**rec, "correct": correct, "tokens_before": 64, "tokens_after": 64 if budget == "all" else 16,
            "frames": 8, "ms": 10.0, "ms_after_encode": 5.0}


def test_aggregate_pairs_each_config_with_full_tokens():
    full = [True, True, True, False, True, False]
    pruned = [True, False, True, True, False, False]  # loses items 1 and 4, gains item 3
    records = [_record(i, "none", c, family="ab"[i % 2]) for i, c in enumerate(full)]
    records += [_record(i, "uniform", c, family="ab"[i % 2], budget="keep_ratio=0.25") for i, c in enumerate(pruned)]
    records.append(_record(6, "uniform", False, budget="keep_ratio=0.25", error=True))
    rows = {r["strategy"]: r for r in aggregate(records)}
    u = rows["uniform"]
    assert (u["n"], u["errors"], u["accuracy"]) == (6, 1, 0.5)
    assert (u["lost"], u["gained"]) == (2, 1)
    assert u["relative_to_full"] == pytest.approx(3 / 4)
    assert u["ci95"] == [round(x, 4) for x in wilson_interval(3, 6)]
    assert u["families"] == {"a": pytest.approx(2 / 3, abs=1e-4), "b": pytest.approx(1 / 3, abs=1e-4)}
    assert rows["none"]["relative_to_full"] == 1.0 and (rows["none"]["lost"], rows["none"]["gained"]) == (0, 0)
    table = markdown_table(list(rows.values()), families=["a"]).splitlines()
    assert table[0] == "| strategy | budget | tokens/frame | accuracy | 95% CI | vs full | lost/gained | a | ms/video |"
    assert table[2].startswith("| none | all | 8.00 | 0.667 |") and "| 100.0% | 0/0 | 1.00 |" in table[2]
    assert "| 75.0% | 2/1 | 0.67 |" in table[3]
    # without `none` there is nothing to pair with: no such columns
    alone = aggregate([r for r in records if r["strategy"] == "uniform"])
    assert "relative_to_full" not in alone[0] and "vs full" not in markdown_table(alone)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny"), processor_overrides={"max_pixels": 112 * 112})


def test_bench_writes_results_and_resumes(model, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--model", str(model), "--dataset", "synthetic", "--limit", "4",
            "--strategies", "none,uniform,codec", "--keep-ratios", "1,0.25", "--max-new-tokens", "2", "--out", str(out)]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    # none runs once (all tokens); uniform and codec at two budgets each
    assert sorted((r["strategy"], r["budget"]) for r in rows) == [
        ("codec", "keep_ratio=0.25"), ("codec", "keep_ratio=1"), ("none", "all"),
        ("uniform", "keep_ratio=0.25"), ("uniform", "keep_ratio=1")]
    for r in rows:
        assert r["n"] == 4 and r["errors"] == 0 and 0 <= r["accuracy"] <= 1
        assert set(r) >= {"strategy", "keep_ratio", "tokens_per_frame", "accuracy", "n", "ms_per_video", "families"}
    full = next(r for r in rows if r["strategy"] == "none")
    quarter = next(r for r in rows if r["budget"] == "keep_ratio=0.25" and r["strategy"] == "uniform")
    assert quarter["tokens_per_frame"] <= 0.26 * full["tokens_per_frame"] + 0.5
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and all(float(r["ci95_low"]) <= float(r["accuracy"]) <= float(r["ci95_high"]) for r in table)
    md = (out / "results.md").read_text().splitlines()
    assert len(md) == 2 + 5 and md[0].startswith("| strategy | budget |")
    png = (out / "accuracy_vs_tokens.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # Resume: a finished run adds nothing; a run cut short redoes only what is missing.
    lines = (out / "items.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 5
    assert main(argv) == 0
    assert (out / "items.jsonl").read_text().splitlines() == lines
    (out / "items.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:10])  # cut mid-line
    assert main(argv) == 0
    again = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert sorted((r["item"], r["config"]) for r in again) == sorted((json.loads(x)["item"], json.loads(x)["config"]) for x in lines)
    assert json.loads((out / "results.json").read_text()) is not None


def test_bench_jsonl_dataset_with_a_broken_video(model, tmp_path):
    from pipeline.videogen import moving_square_video

    moving_square_video(tmp_path / "ok.mp4", width=112, height=112, num_frames=8, fps=8.0)
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    ds = tmp_path / "ds.jsonl"
    ds.write_text(
        json.dumps({"video": "ok.mp4", "question": "which way?", "options": ["left", "right"], "answer": "right"}) + "\n"
        + json.dumps({"video": "bad.mp4", "question": "which way?", "answer": "left"}) + "\n")
    out = tmp_path / "out"
    assert main(["bench", "--model", str(model), "--dataset", str(ds), "--strategies", "uniform", "--keep-ratios", "0.5",
                 "--max-new-tokens", "2", "--options-in-prompt", "--out", str(out)]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert row["n"] == 1 and row["errors"] == 1


def test_bench_bad_dataset_is_one_line(tmp_path, capsys):
    ds = tmp_path / "ds.jsonl"
    ds.write_text('{"video": "x.mp4"}\n')
    assert main(["bench", "--dataset", str(ds), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidsieve: error:") and "ds.jsonl:1" in err and "\n" not in err


def test_a_resumed_run_must_keep_its_settings(tmp_path):
    from encoders.errors import BadRequest
    from pipeline.bench_accuracy import check_settings

    first = {"model": "m", "dropped": "absorb", "attention": "proportional", "max_new_tokens": 8}
    check_settings(tmp_path, first)
    check_settings(tmp_path, dict(first))  # same settings: resumes
    with pytest.raises(BadRequest, match="dropped was 'absorb', now 'drop'") as e:
        check_settings(tmp_path, {**first, "dropped": "drop"})
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)

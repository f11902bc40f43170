"""`vidsieve bench`: scoring rules, outputs, resume, bad datasets (tiny random Qwen2.5-VL, real H.264)."""

from __future__ import annotations

import csv
import json

import pytest

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
        assert len(list(csv.DictReader(f))) == 5
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

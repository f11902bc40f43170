"""The shipped demo model (models/vidsieve-tiny) and the README's main job, `vidsieve demo`."""

from __future__ import annotations

import argparse
import json

import pytest

from pipeline.engine import DEMO_MODEL_DIR, Engine
from pipeline.options import AskOptions
from pipeline.scoring import is_correct

pytestmark = pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason="demo model not shipped")


def test_demo_model_counts_shapes_on_held_out_videos(tmp_path):
    """The model card says it learned `count` (0.95-1.0 on the test split); 6 of 8 right by chance
    (p = 0.25 each) has probability about 0.004."""
    from pipeline.synth_dataset import write_dataset
    from pipeline.synthqa import SynthConfig
    from pipeline.train_demo import DemoRecipe

    r = DemoRecipe()
    index = write_dataset(tmp_path, "test", 56, cfg=SynthConfig(frames=r.frames, size=r.size))
    items = [json.loads(x) for x in index.read_text().splitlines()]
    count = [x for x in items if x["family"] == "count"]
    assert len(count) == 8
    engine = Engine()  # the default model is the shipped demo model
    assert engine.model_dir == DEMO_MODEL_DIR
    right = 0
    for x in count:
        ans = engine.ask(tmp_path / x["video"], x["question"], AskOptions(fps=240.0, max_new_tokens=4))
        assert ans["stats"]["grid"] == [r.frames // 2, r.size // 28, r.size // 28]
        right += is_correct(ans["answer"], x["answer"], x["options"])
    assert right >= 6, f"{right}/8 count questions right"


def test_demo_command_runs_the_whole_pipeline(capsys):
    from pipeline import cmd_demo

    args = argparse.Namespace(model=None, strategy="codec", keep_ratio=0.25, per_family=1, keep=None, json=True)
    assert cmd_demo.run(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["rows"]) == 7 and {r["family"] for r in out["rows"]} >= {"count", "direction", "colour"}
    assert out["tokens_after"] <= 0.25 * out["tokens_before"] + 7  # one rounding per video at most
    assert all(r["truth"] and isinstance(r["full"], str) for r in out["rows"])

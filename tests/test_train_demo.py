"""train-demo: a few real optimisation steps of a tiny recipe, exact resume, determinism, export -> Engine."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.engine import Engine
from pipeline.options import AskOptions
from pipeline.train_demo import DemoRecipe, build_tokenizer, corpus_words, export, recipe_of, train
from pipeline.synthqa import vocabulary

TINY = dict(width=32, encoder_depth=1, encoder_heads=2, encoder_mlp=32, text_layers=1, text_heads=2, text_kv_heads=1,
            text_mlp=64, mrope_section=(2, 3, 3), batch=2, warmup=2, lr=1e-3)


def weights(out):
    state = torch.load(out / "ckpt.pt", weights_only=False)
    aux = {f"aux.{k}": v for k, v in (state["aux"] or {}).items()}
    return state["step"], {**state["model"], **{f"enc.{k}": v for k, v in state["encoder"].items()}, **aux}


def test_tokenizer_knows_every_question_word():
    tok = build_tokenizer(corpus_words())
    unk = tok.convert_tokens_to_ids("[UNK]")
    for text in vocabulary():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert unk not in ids, text
    assert tok.decode(tok("Which WAY?", add_special_tokens=False)["input_ids"]) == "which way?"


def test_resume_is_exact_and_runs_are_deterministic(tmp_path):
    # with the auxiliary per-token loss on, so its heads and their optimizer state resume too
    recipe = DemoRecipe(**TINY, total_steps=4, aux_weight=0.5)
    a = tmp_path / "a"
    res = train(a, recipe, minutes=60, eval_every=2, eval_n=2)
    assert res["step"] == 4 and [h["step"] for h in res["history"]] == [2, 4]
    b = tmp_path / "b"
    train(b, recipe, minutes=60, eval_every=2, eval_n=2)
    step_a, wa = weights(a)
    step_b, wb = weights(b)
    assert any(k.startswith("aux.") for k in wa)
    assert step_a == step_b == 4
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "same seed, same recipe: same weights"
    # Resume: a run interrupted after 2 steps and continued equals the straight run.
    c = tmp_path / "c"
    train(c, recipe, minutes=60, eval_every=2, eval_n=2, stop_at_step=2)
    assert weights(c)[0] == 2
    train(c, recipe, minutes=60, eval_every=2, eval_n=2)
    step_c, wc = weights(c)
    assert step_c == 4 and all(torch.equal(wa[k], wc[k]) for k in wa)
    # A different seed gives different weights (the test above could not pass by accident).
    d = tmp_path / "d"
    train(d, DemoRecipe(**TINY, total_steps=4, seed=1), minutes=60, eval_every=2, eval_n=2)
    assert not all(torch.equal(wa[k], weights(d)[1][k]) for k in wa)


def test_changed_recipe_refuses_to_resume(tmp_path):
    train(tmp_path, DemoRecipe(**TINY, total_steps=1), minutes=60, eval_every=1, eval_n=2)
    with pytest.raises(SystemExit, match="different recipe"):
        train(tmp_path, DemoRecipe(**{**TINY, "lr": 2e-3}, total_steps=1), minutes=60, eval_every=1, eval_n=2)


def test_a_checkpoint_older_than_a_recipe_field_reads_as_trained():
    # the first shipped model's recipe, written before abs-pos, text rope theta and the aux loss existed
    old = dict(width=128, encoder_depth=3, encoder_heads=4, encoder_mlp=256, text_layers=2, text_heads=4, text_kv_heads=2,
               text_mlp=384, mrope_section=[4, 6, 6], tokens_per_second=2, batch=16, lr=5e-4, warmup=100,
               total_steps=3500, weight_decay=0.01, seed=0, frames=8, size=112)
    recipe = recipe_of({"recipe": old})
    assert (recipe.aux_weight, recipe.encoder_abs_pos, recipe.text_rope_theta, recipe.mrope_section) == (0.0, (), 1e4, (4, 6, 6))
    assert recipe.aux_targets == ("colour", "kind", "motion")  # before the appear target existed
    assert recipe != DemoRecipe(**{**old, "mrope_section": (4, 6, 6)})  # today's defaults differ: not read from them


def test_export_loads_in_the_engine_with_the_st3d_encoder(tmp_path):
    recipe = DemoRecipe(**TINY, total_steps=2, aux_weight=0.0)  # the answer loss alone
    train(tmp_path / "run", recipe, minutes=60, eval_every=2, eval_n=2)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "README.md").write_text("# card\n")
    (tmp_path / "model" / "stale.bin").write_text("old")
    model = export(tmp_path / "run", tmp_path / "model")  # the recipe comes from the checkpoint
    assert (model / "README.md").read_text() == "# card\n" and not (model / "stale.bin").exists()
    assert (model / "encoder.safetensors").is_file() and (model / "encoder_config.json").is_file()
    assert json.loads((model / "encoder_config.json").read_text())["family"] == "st3d"
    training = json.loads((model / "training.json").read_text())
    assert training["step"] == 2 and training["recipe"]["width"] == TINY["width"]
    # A new run can start from the exported weights (how a later, longer run continues this one).
    train(tmp_path / "run2", recipe, minutes=60, eval_every=2, eval_n=2, stop_at_step=0, init_from=model)
    _, w2 = weights(tmp_path / "run2")
    _, w1 = weights(tmp_path / "run")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    engine = Engine(model)
    assert engine.llm.encoder.config.family == "st3d"
    from pipeline.synth_dataset import write_dataset
    from pipeline.synthqa import SynthConfig

    index = write_dataset(tmp_path / "ds", "test", 1, cfg=SynthConfig(frames=recipe.frames, size=recipe.size))
    item = json.loads(index.read_text().splitlines()[0])
    r = engine.ask(tmp_path / "ds" / item["video"], item["question"], AskOptions(fps=240.0, max_new_tokens=3))
    assert r["stats"]["grid"] == [recipe.frames // 2, recipe.size // 28, recipe.size // 28]
    assert 1 <= len(r["output_token_ids"]) <= 3


def test_aux_targets_on_the_command_line(tmp_path):
    import argparse

    from encoders.errors import BadRequest
    from pipeline.train_demo import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "run"), "--aux-targets", "colour,when"])
    with pytest.raises(BadRequest, match=r"unknown --aux-targets \['when'\]"):
        run(args)
    assert p.parse_args([]).aux_targets == ",".join(DemoRecipe().aux_targets)

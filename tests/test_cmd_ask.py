"""`vidsieve ask` through a real subprocess on a tiny Qwen2.5-VL checkpoint and a generated video.

The JSON contract is checked field by field, and the answer's token ids against transformers:
`generate` for `--strategy none`, the full-sequence-position greedy reference for a pruning strategy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.decode import sample_frames
from pipeline.llm import QwenVL
from pipeline.videogen import moving_square_video
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl
from tests.test_llm_generate import hf_inputs, reference_pruned_greedy

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What happens in the video?"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    model_dir = make_tiny_qwen2_5_vl(root / "ckpt", seed=5)
    video = root / "square.mp4"
    moving_square_video(video, width=84, height=56, num_frames=16, fps=8.0, square_px=16, step_px=(4, 2))
    llm = QwenVL.load(model_dir, device="cpu", dtype=torch.float32, vision="transformers")
    return dict(model_dir=str(model_dir), video=str(video), llm=llm)


def vidsieve(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VIDSIEVE_MODEL"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ask", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_frames(setup):
    # What the command decodes: fps 3, straight to the processor's pixel cap.
    return sample_frames(setup["video"], fps=3.0, max_pixels=56 * 84)


def test_json_contract_and_equality_with_transformers_generate(setup):
    out = last_json(vidsieve(setup["video"], QUESTION, "--model", setup["model_dir"], "--fps", "3", "--max-new-tokens", "10", "--json"))
    s = out["stats"]
    assert s["frames"] == 6 and s["grid"] == [3, 2, 3]
    assert s["tokens_before"] == s["tokens_after"] == len(out["kept"]) == 18
    assert s["tokens_per_frame"] == 3.0 and s["strategy"] == "none" and s["budget"] == "all"
    assert {"decode", "encode", "prefill", "generate"} <= set(s["timings_ms"])
    assert out["kept"][:2] == [[0, 0, 0], [0, 0, 1]]

    llm = setup["llm"]
    inp = hf_inputs(llm, same_frames(setup))
    with torch.inference_mode():
        ref = llm.model.generate(**inp, max_new_tokens=10, do_sample=False)
    ref_ids = ref[0, inp["input_ids"].shape[1] :].tolist()
    assert out["output_token_ids"] == ref_ids
    assert out["answer"] == llm.tokenizer.decode(ref_ids, skip_special_tokens=True)


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The same command through `pipeline.cli.main` in this process (the model loads once)."""
    from pipeline.cli import main

    rc = main(["ask", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_pruned_answer_equals_reference_at_original_positions(setup, capsys):
    pytest.importorskip("tokencomp.registry")
    rc, stdout, stderr = in_process(
        capsys, setup["video"], QUESTION, "--model", setup["model_dir"], "--fps", "3",
        "--strategy", "divprune", "--keep-ratio", "0.5", "--max-new-tokens", "10", "--json",
        "--dropped", "drop", "--attention", "plain",  # plain pruning: what the reference below computes
    )
    assert rc == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["stats"]["weight_sum"] == 9 and (out["stats"]["dropped"], out["stats"]["attention"]) == ("drop", "plain")
    kept = torch.tensor(out["kept"])
    assert out["stats"]["tokens_after"] == len(kept) == 9 and out["stats"]["budget"] == "keep_ratio=0.5"
    raster = kept[:, 0] * 6 + kept[:, 1] * 3 + kept[:, 2]
    assert torch.equal(raster, raster.sort().values), "kept tokens must enter the LLM in original order"
    llm = setup["llm"]
    ref = reference_pruned_greedy(llm, hf_inputs(llm, same_frames(setup)), raster, 10)
    assert out["output_token_ids"] == ref
    # The defaults keep the same tokens, now standing for all 18 originals.
    rc, stdout, stderr = in_process(
        capsys, setup["video"], QUESTION, "--model", setup["model_dir"], "--fps", "3",
        "--strategy", "divprune", "--keep-ratio", "0.5", "--max-new-tokens", "10", "--json",
    )
    default = json.loads(stdout.strip().splitlines()[-1])
    assert default["kept"] == out["kept"] and default["stats"]["weight_sum"] == 18


def test_plain_output_with_model_from_env(setup, capsys, monkeypatch):
    monkeypatch.setenv("VIDSIEVE_MODEL", setup["model_dir"])
    rc, stdout, stderr = in_process(capsys, setup["video"], QUESTION, "--fps", "3", "--max-new-tokens", "4")
    assert rc == 0, stderr
    lines = stdout.rstrip("\n").splitlines()
    assert lines[-1].startswith("[6 frames, 18/18 visual tokens (100%), none all,")


def test_errors_are_one_line(setup, capsys, monkeypatch):
    from pipeline.engine import DEMO_MODEL_DIR

    proc = vidsieve(setup["video"], QUESTION, "--max-new-tokens", "2")  # no --model, no $VIDSIEVE_MODEL
    if (DEMO_MODEL_DIR / "config.json").is_file():  # the shipped demo model is the last default
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert proc.returncode == 2
        assert proc.stderr.strip().startswith("vidsieve: error: no model") and len(proc.stderr.strip().splitlines()) == 1
    monkeypatch.delenv("VIDSIEVE_MODEL", raising=False)
    for bad, word in [(["--keep-ratio", "1.5"], "keep_ratio"), (["--strategy", "divprune"], "needs a budget")]:
        rc, _, err = in_process(capsys, setup["video"], QUESTION, "--model", setup["model_dir"], *bad)
        assert rc == 2 and word in err and len(err.strip().splitlines()) == 1, err

"""Proportional attention (pipeline/weighting.py) in the LLM stage, and absorbed weights end to end.

1. On a one-layer Qwen2.5-VL text model a row of weight w gives the question the logits of w
   identical copies of that row at the same position (exact: the copies' keys and values are equal).
2. With every weight 1 the proportional path is the plain one, bit for bit (transformers' mask).
3. The mask itself: causal over past + new keys, the bias on the prompt's visual keys only.
4. Through the engine: `dropped` and `attention` reach compression and the LLM, the answer's stats
   say what was used and how many original tokens the kept ones stand for.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.decode import sample_frames
from pipeline.llm import QwenVL
from pipeline.videogen import moving_square_video
from pipeline.weighting import attention_mask, key_bias
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

QUESTION = "What happens in the video?"


def _load(root, layers: int):
    model_dir = make_tiny_qwen2_5_vl(root / f"ckpt{layers}", seed=5, text_config={"num_hidden_layers": layers})
    video = root / "square.mp4"
    if not video.exists():
        moving_square_video(video, width=84, height=56, num_frames=16, fps=8.0, square_px=16, step_px=(4, 2))
    sampled = sample_frames(video, fps=3.0)
    llm = QwenVL.load(model_dir, device="cpu", dtype=torch.float32)
    vin = llm.preprocess(sampled.frames, sampled.time_s, sampled.sampled_fps)
    return llm, vin, llm.encode(vin)


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory):
    return _load(tmp_path_factory.mktemp("prop1"), 1)


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    return _load(tmp_path_factory.mktemp("prop2"), 2)


def _weighted(tokens, weights: dict[int, int]):
    from dataclasses import replace

    w = tokens.weight.clone()
    for row, value in weights.items():
        w[row] = value
    return replace(tokens, weight=w)


@pytest.mark.parametrize("weights", [{4: 3}, {0: 2, 7: 5, 17: 4}])
def test_weight_w_equals_w_copies_on_one_layer(one_layer, weights):
    llm, vin, tokens = one_layer
    weighted = _weighted(tokens, weights)
    # The same stream with row r repeated w times in place (same embedding, same position).
    index = torch.tensor([r for r in range(len(tokens)) for _ in range(weights.get(r, 1))])
    copies = tokens.select(index)
    got = llm.question_logits(llm.prefill_video(weighted, vin.second_per_grid, attention="proportional"), QUESTION)
    want = llm.question_logits(llm.prefill_video(copies, vin.second_per_grid, attention="plain"), QUESTION)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), f"max diff {(got - want).abs().max():.2e}"
    # And it matters: the plain path on the weighted stream reads it as one copy each.
    plain = llm.question_logits(llm.prefill_video(weighted, vin.second_per_grid, attention="plain"), QUESTION)
    assert (plain - want).abs().max() > 1e-3


def test_generation_steps_see_the_weights(one_layer):
    """Each generated token's step (cache of past keys + one new query) gets the bias too: greedy
    answers and their logits equal those over the copies, step after step."""
    from pipeline.sampling import GenerationConfig

    llm, vin, tokens = one_layer
    weights = {3: 6, 10: 9}
    index = torch.tensor([r for r in range(len(tokens)) for _ in range(weights.get(r, 1))])
    gen = GenerationConfig(max_new_tokens=8)
    prefix = llm.prefill_video(_weighted(tokens, weights), vin.second_per_grid)
    assert prefix.key_bias is not None and prefix.key_bias.numel() == len(prefix.ids)
    got = llm.ask(prefix, QUESTION, gen).token_ids
    want = llm.ask(llm.prefill_video(tokens.select(index), vin.second_per_grid, attention="plain"), QUESTION, gen).token_ids
    assert got == want and len(got) >= 2


def test_all_ones_is_the_plain_path_bit_for_bit(two_layers):
    llm, vin, tokens = two_layers
    prop = llm.prefill_video(tokens, vin.second_per_grid, attention="proportional")
    assert prop.key_bias is None
    a = llm.question_logits(prop, QUESTION)
    b = llm.question_logits(llm.prefill_video(tokens, vin.second_per_grid, attention="plain"), QUESTION)
    assert torch.equal(a, b)


def test_key_bias_and_mask():
    assert key_bias(3, torch.ones(4, dtype=torch.int64)) is None
    bias = key_bias(2, torch.tensor([1, 4, 1]))
    assert bias.tolist() == pytest.approx([0, 0, 0, math.log(4), 0])
    with pytest.raises(ValueError, match=">= 1"):
        key_bias(0, torch.tensor([1, 0]))
    # Prefill: 5 keys, causal, bias on key 3 wherever a query may see it.
    m = attention_mask(bias, past=0, q_len=5, dtype=torch.float32)[0, 0]
    neg = torch.finfo(torch.float32).min
    assert m.shape == (5, 5)
    assert bool((m.triu(1)[torch.ones(5, 5).triu(1).bool()] == neg).all())
    assert m[4, 3] == pytest.approx(math.log(4)) and m[2, 3] == neg and m[4, 4] == 0
    # A later step: 2 new queries after 5 cached keys; the bias still sits on key 3, new keys get 0.
    m = attention_mask(bias, past=5, q_len=2, dtype=torch.bfloat16)[0, 0]
    assert m.shape == (2, 7) and m.dtype == torch.bfloat16
    assert float(m[0, 3]) == pytest.approx(math.log(4), rel=1e-2) and float(m[0, 5]) == 0 and float(m[0, 6]) < -1e30


def test_bad_attention_mode_is_refused(two_layers):
    llm, vin, tokens = two_layers
    with pytest.raises(ValueError, match="attention"):
        llm.prefill_video(tokens, vin.second_per_grid, attention="loud")

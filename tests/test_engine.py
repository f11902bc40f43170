"""Engine: the stages composed end to end on a tiny random Qwen2.5-VL and real generated H.264 videos."""

from __future__ import annotations

import pytest
import torch

from encoders.errors import BadRequest, VidsieveError
from pipeline.engine import Engine, default_model_dir
from pipeline.options import AskOptions
from pipeline.videogen import moving_square_video
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

# Frames larger than the tiny processor's cap (4704 px): decode resizes them to the cap.
PROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model = make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny"), processor_overrides=PROCESSOR)
    return Engine(model)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "square.mp4"
    moving_square_video(path, "h264", width=112, height=112, num_frames=16, fps=8.0, square_px=28, step_px=(6, 0))
    return path


def test_ask_returns_the_contract(engine, video):
    r = engine.ask(video, "What moves?", AskOptions(max_new_tokens=5, fps=8.0))
    s = r["stats"]
    t, h, w = s["grid"]
    assert s["frames"] == 16 and t == 8
    assert s["tokens_before"] == t * h * w == s["tokens_after"] == len(r["kept"])
    assert 1 <= len(r["output_token_ids"]) <= 5
    assert isinstance(r["answer"], str)
    assert set(s["timings_ms"]) >= {"decode", "encode", "prefill", "generate", "total"}
    assert s["frame_times_s"] == pytest.approx([i / 8.0 for i in range(16)])
    # the prompt holds every visual token plus the chat template's text and the question
    assert s["prompt_tokens"] > s["tokens_after"]
    # kept positions in raster order on the LLM grid
    assert r["kept"] == sorted(r["kept"])


def test_compression_keeps_budget_and_original_positions(engine, video):
    full = engine.ask(video, "What moves?", AskOptions(max_new_tokens=3, fps=8.0))
    r = engine.ask(video, "What moves?", AskOptions(strategy="temporal", keep_ratio=0.25, max_new_tokens=3, fps=8.0))
    s = r["stats"]
    assert s["tokens_after"] <= round(0.25 * s["tokens_before"]) + 1
    assert set(map(tuple, r["kept"])) <= set(map(tuple, full["kept"]))
    assert s["strategy"] == "temporal" and s["budget"] == "keep_ratio=0.25"


def test_dropped_and_attention_reach_compression_and_the_llm(engine, video):
    """Defaults: dropped tokens are absorbed (the kept ones stand for every original token) and the
    LLM attends proportionally; "drop" + "plain" is plain pruning. Same kept positions either way."""
    base = dict(strategy="codec", keep_ratio=0.25, max_new_tokens=3, fps=8.0)
    absorbed = engine.ask(video, "What moves?", AskOptions(**base))
    plain = engine.ask(video, "What moves?", AskOptions(**base, dropped="drop", attention="plain"))
    a, p = absorbed["stats"], plain["stats"]
    assert (a["dropped"], a["attention"], p["dropped"], p["attention"]) == ("absorb", "proportional", "drop", "plain")
    assert absorbed["kept"] == plain["kept"]
    assert a["weight_sum"] == a["tokens_before"] and p["weight_sum"] == p["tokens_after"] < p["tokens_before"]


def test_ask_many_shares_the_prefix_and_matches_separate_asks(engine, video):
    opts = AskOptions(strategy="tome", keep_ratio=0.5, max_new_tokens=4, fps=8.0)
    questions = ["What moves?", "Which way does it go?"]
    many = engine.ask_many(video, questions, opts)
    single = [engine.ask(video, q, opts) for q in questions]
    assert [m["output_token_ids"] for m in many] == [s["output_token_ids"] for s in single]
    assert [m["kept"] for m in many] == [s["kept"] for s in single]


def test_query_aware_strategy_compresses_per_question(engine, video):
    opts = AskOptions(strategy="query", keep_ratio=0.25, max_new_tokens=2, fps=8.0)
    questions = ["red square", "blue background texture"]
    many = engine.ask_many(video, questions, opts)
    single = [engine.ask(video, q, opts) for q in questions]
    assert [m["kept"] for m in many] == [s["kept"] for s in single]


def test_stream_deltas_join_to_the_answer(engine, video):
    opts = AskOptions(max_new_tokens=6, fps=8.0)
    events = list(engine.ask_stream(video, "What moves?", opts))
    result = events[-1]["result"]
    text = "".join(e["delta"] for e in events[:-1])
    assert text == result["answer"]
    assert result["output_token_ids"] == engine.ask(video, "What moves?", opts)["output_token_ids"]


def test_codec_preselection_encodes_only_chosen_cells(engine, video):
    after = engine.ask(video, "q", AskOptions(strategy="codec", keep_ratio=0.25, max_new_tokens=2, fps=8.0))
    before_opts = AskOptions(strategy="codec", keep_ratio=0.25, max_new_tokens=2, fps=8.0, codec_placement="before")
    decoded = engine.decode(video, before_opts)
    encoded = engine.encode(decoded, before_opts)
    assert "select" in encoded.timings_ms
    # The encoder itself returned only the selected cells (nothing was encoded then dropped).
    assert len(encoded.tokens) == after["stats"]["tokens_after"] < encoded.tokens.tokens_uncompressed
    before = engine.ask(video, "q", before_opts)
    # Same cell choice as dropping after the encoder (no embedding-based scene test fires here).
    assert before["kept"] == after["kept"]


def test_full_preselection_equals_full_encoding(engine, video):
    opts = AskOptions(fps=8.0)
    decoded = engine.decode(video, AskOptions(strategy="codec", keep_ratio=1.0, fps=8.0))
    full = engine.encode(decoded, opts)
    pre = engine.encode(decoded, AskOptions(strategy="codec", keep_ratio=1.0, fps=8.0, codec_placement="before"))
    assert torch.allclose(full.tokens.embeds, pre.tokens.embeds, atol=1e-6)
    assert torch.equal(full.tokens.pos, pre.tokens.pos)


@pytest.mark.parametrize(
    "opts, message",
    [
        (dict(strategy="tome"), "needs a budget"),
        (dict(strategy="nope", keep_ratio=0.5), "nope"),
        (dict(strategy="tome", keep_ratio=0.5, codec_placement="before"), "starting with 'codec'"),
        (dict(strategy="tome", keep_ratio=0.5, dropped="lose"), "dropped must be one of"),
        (dict(strategy="tome", keep_ratio=0.5, attention="loud"), "attention must be one of"),
    ],
)
def test_bad_requests_are_one_line_errors(engine, video, opts, message):
    with pytest.raises(BadRequest, match=message) as e:
        engine.ask(video, "q", AskOptions(**opts))
    assert "\n" not in str(e.value)


def test_bad_video_is_a_vidsieve_error(engine, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VidsieveError, match="bad.mp4"):
        engine.ask(bad, "q")


def test_model_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSIEVE_MODEL", str(tmp_path))
    assert default_model_dir(None) == tmp_path
    with pytest.raises(BadRequest, match="does not exist"):
        default_model_dir(tmp_path / "missing")


def test_a_generated_vision_placeholder_is_embedded_as_text(tmp_path, video):
    """A model may emit <|video_pad|>; feeding it back must not be taken for a visual-token slot."""
    model = make_tiny_qwen2_5_vl(tmp_path / "m", processor_overrides=PROCESSOR)
    eng = Engine(model)
    pad = eng.llm.video_token_id

    def boost(module, args, logits):  # make <|video_pad|> the argmax of every step
        logits[..., pad] += 1e4
        return logits

    eng.llm.model.lm_head.register_forward_hook(boost)
    r = eng.ask(video, "What moves?", AskOptions(max_new_tokens=3, fps=8.0))
    assert r["output_token_ids"] == [pad, pad, pad]

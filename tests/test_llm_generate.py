"""pipeline/llm.py against transformers itself, on a tiny random Qwen2.5-VL and a real encoded video.

1. No compression: our generated ids == `Qwen2_5_VLForConditionalGeneration.generate` (greedy) on the
   same frames (processor with do_sample_frames=False and the true sampling fps).
2. Pruned: our ids == a greedy loop written here over transformers' model fed only the kept video
   tokens at the positions `get_rope_index` assigns on the full sequence.
3. `compact` positions give different logits and tokens than `keep`.
4. Merged (`tome`) in `centroid` mode: our ids == a greedy loop over transformers' model fed the
   merged rows at float32 positions, each the mean of its members' `get_rope_index` positions.
Plus prefix reuse, seeded sampling, streaming and input errors.
"""

from __future__ import annotations

import pytest
import torch

from encoders.errors import VidsieveError
from pipeline.decode import sample_frames
from pipeline.llm import ModelLoadError, QwenVL
from pipeline.positions import prompt_position_ids
from pipeline.sampling import GenerationConfig, top_p_filter
from pipeline.videogen import moving_square_video
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

QUESTION = "What happens in the video?"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    model_dir = make_tiny_qwen2_5_vl(root / "ckpt", seed=3)
    video = root / "square.mp4"
    moving_square_video(video, width=84, height=56, num_frames=16, fps=8.0, square_px=16, step_px=(4, 2))
    # fps 3 on an 8 fps video: 6 frames, second_per_grid 2/3 (a non-integer temporal step).
    sampled = sample_frames(video, fps=3.0)
    # vidsieve's encoder; transformers' tower kept too, for the reference runs below.
    llm = QwenVL.load(model_dir, device="cpu", dtype=torch.float32, keep_hf_vision=True)
    vin = llm.preprocess(sampled.frames, sampled.time_s, sampled.sampled_fps)
    tokens = llm.encode(vin)
    return dict(model_dir=model_dir, sampled=sampled, llm=llm, vin=vin, tokens=tokens)


def hf_inputs(llm: QwenVL, sampled, question: str = QUESTION):
    from transformers.video_utils import VideoMetadata

    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = llm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    meta = VideoMetadata(total_num_frames=sampled.num_frames, fps=sampled.sampled_fps)
    return llm.processor(
        text=[text],
        videos=[sampled.frames],
        videos_kwargs=dict(video_metadata=[meta], do_sample_frames=False),
        return_tensors="pt",
    )


def test_grid_and_tokens_match_the_processor(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    inp = hf_inputs(llm, setup["sampled"])
    assert list(inp["video_grid_thw"][0]) == list(vin.grid_thw)
    assert torch.equal(inp["pixel_values_videos"], vin.pixel_values)
    assert tuple(tokens.grids[0].tolist()) == (3, 2, 3) and len(tokens) == 18
    assert float(inp["second_per_grid_ts"][0]) == pytest.approx(vin.second_per_grid)


def test_vidsieve_encoder_matches_transformers_tower(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    assert llm.vision_name == "vidsieve"
    with torch.inference_mode():
        ref = llm.model.model.get_video_features(vin.pixel_values, torch.tensor([list(vin.grid_thw)])).pooler_output[0]
    assert torch.allclose(tokens.embeds, ref, atol=1e-4, rtol=0), f"max diff {(tokens.embeds - ref).abs().max():.2e}"
    # A cell mask encodes only the kept cells, at their true (t, h, w).
    mask = torch.zeros(tokens.grids[0].tolist(), dtype=torch.bool)
    mask[0] = True
    mask[2, 1, 2] = True
    part = llm.encode(vin, cell_mask=mask)
    assert part.pos.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 1, 1], [0, 1, 2], [2, 1, 2]]


def test_uncompressed_equals_transformers_generate(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    inp = hf_inputs(llm, setup["sampled"])
    with torch.inference_mode():
        ref = llm.model.generate(**inp, max_new_tokens=NEW_TOKENS, do_sample=False)
    ref_ids = ref[0, inp["input_ids"].shape[1] :].tolist()
    answer = llm.ask(llm.prefill_video(tokens, vin.second_per_grid), QUESTION, GenerationConfig(max_new_tokens=NEW_TOKENS))
    assert answer.prompt_ids == inp["input_ids"][0].tolist(), "prompt ids differ from the processor's"
    assert answer.token_ids == ref_ids, f"vidsieve {answer.token_ids} vs transformers {ref_ids}"
    assert len(set(ref_ids)) > 1, "degenerate reference: the tiny model repeats one token"


def test_long_temporal_span_follows_transformers_text_rule(setup):
    """8 frames at 2 fps: temporal positions reach 6 > max(H, W) = 3, where the "spatial" rule
    (transformers 5.x) and the "max" rule (Qwen2.5-VL's original code) part ways."""
    from types import SimpleNamespace

    import numpy as np

    llm = setup["llm"]
    frames = np.random.RandomState(2).randint(0, 256, (8, 56, 84, 3), dtype=np.uint8)
    sampled = SimpleNamespace(frames=frames, num_frames=8, sampled_fps=2.0)
    vin = llm.preprocess(frames, np.arange(8) / 2.0, 2.0)
    tokens = llm.encode(vin)
    inp = hf_inputs(llm, sampled)
    with torch.inference_mode():
        ref = llm.model.generate(**inp, max_new_tokens=NEW_TOKENS, do_sample=False)
    ref_ids = ref[0, inp["input_ids"].shape[1] :].tolist()
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS)
    spatial = llm.prefill_video(tokens, vin.second_per_grid)
    assert llm.ask(spatial, QUESTION, gen).token_ids == ref_ids
    other = llm.prefill_video(tokens, vin.second_per_grid, text_after="max")
    diff = (llm.question_logits(spatial, QUESTION) - llm.question_logits(other, QUESTION)).abs().max()
    assert diff > 1e-3, "the two text rules gave the same logits: this video does not tell them apart"


def reference_pruned_greedy(llm: QwenVL, inp, keep: torch.Tensor, steps: int) -> list[int]:
    """Written apart from pipeline/llm.py: transformers' full model, kept video tokens only,
    positions from `get_rope_index` on the full sequence, greedy, KV cache."""
    model = llm.model
    ids = inp["input_ids"]
    with torch.inference_mode():
        pos, delta = model.model.get_rope_index(
            ids,
            mm_token_type_ids=inp["mm_token_type_ids"],
            video_grid_thw=inp["video_grid_thw"],
            second_per_grid_ts=inp["second_per_grid_ts"],
        )
        feats = model.model.get_video_features(inp["pixel_values_videos"], inp["video_grid_thw"]).pooler_output[0]
        video_cols = (ids[0] == model.config.video_token_id).nonzero().flatten()
        assert video_cols.numel() == feats.shape[0]
        drop = torch.zeros(ids.shape[1], dtype=torch.bool)
        drop[video_cols] = True
        drop[video_cols[keep]] = False
        cols = (~drop).nonzero().flatten()
        emb = model.get_input_embeddings()(ids[0]).clone()
        emb[video_cols] = feats
        return greedy_loop(model, emb[cols][None], pos[:, :, cols], ids.shape[1] + int(delta[0]), steps)


def greedy_loop(model, embeds, positions, next_position: int, steps: int) -> list[int]:
    """Greedy decoding over transformers' model from a prompt given as embeddings + position ids;
    generated token k sits at `next_position + k` on all three rows. KV cache; stops at EOS."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config.text_config)
    out = model(inputs_embeds=embeds, position_ids=positions, past_key_values=cache, use_cache=True)
    generated = []
    for k in range(steps):
        tok = int(out.logits[0, -1].argmax())
        generated.append(tok)
        if tok == model.generation_config.eos_token_id:
            break
        p = torch.full((3, 1, 1), next_position + k)
        out = model(input_ids=torch.tensor([[tok]]), position_ids=p, past_key_values=cache, use_cache=True)
    return generated


def test_pruned_equals_transformers_at_full_sequence_positions(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    keep = torch.arange(0, len(tokens), 2)  # every other token, in original order
    inp = hf_inputs(llm, setup["sampled"])
    ref = reference_pruned_greedy(llm, inp, keep, NEW_TOKENS)
    prefix = llm.prefill_video(tokens.select(keep), vin.second_per_grid)
    ours = llm.ask(prefix, QUESTION, GenerationConfig(max_new_tokens=NEW_TOKENS)).token_ids
    assert ours == ref, f"vidsieve {ours} vs reference {ref}"
    # Pruning really changed the input: the uncompressed answer or logits differ.
    full = llm.prefill_video(tokens, vin.second_per_grid)
    assert not torch.allclose(llm.question_logits(full, QUESTION), llm.question_logits(prefix, QUESTION), atol=1e-4)


def test_compact_mode_differs_from_keep(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    kept = tokens.select(torch.arange(0, len(tokens), 2))
    keep_p = llm.prefill_video(kept, vin.second_per_grid, mode="keep")
    compact_p = llm.prefill_video(kept, vin.second_per_grid, mode="compact")
    a, b = llm.question_logits(keep_p, QUESTION), llm.question_logits(compact_p, QUESTION)
    again = llm.question_logits(llm.prefill_video(kept, vin.second_per_grid, mode="keep"), QUESTION)
    assert torch.equal(a, again), "keep mode is not deterministic; the comparison below would mean nothing"
    assert (a - b).abs().max() > 1e-2, f"compact and keep logits nearly equal: max diff {(a - b).abs().max():.2e}"
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS)
    assert llm.ask(keep_p, QUESTION, gen).token_ids != llm.ask(compact_p, QUESTION, gen).token_ids


def reference_merged_greedy(llm: QwenVL, inp, merged, steps: int) -> tuple[list[int], torch.Tensor]:
    """Written apart from pipeline/positions.py: the merged rows' embeds in the video slots, each at
    the exact mean (rounded once to float32) of the positions `get_rope_index` gives its members on
    the full sequence; text at its full-sequence positions; greedy over transformers' full model.
    Returns (generated ids, [3, 1, L] float32 prompt positions)."""
    from fractions import Fraction

    model = llm.model
    ids = inp["input_ids"]
    _, h, w = (int(g) for g in merged.grids[0])
    with torch.inference_mode():
        pos, delta = model.model.get_rope_index(
            ids,
            mm_token_type_ids=inp["mm_token_type_ids"],
            video_grid_thw=inp["video_grid_thw"],
            second_per_grid_ts=inp["second_per_grid_ts"],
        )
        full = pos[:, 0]
        video_cols = (ids[0] == model.config.video_token_id).nonzero().flatten()
        first, last = int(video_cols[0]), int(video_cols[-1])
        centroids = []
        for row in merged.member_groups():
            cols = [int(video_cols[(t * h + y) * w + x]) for t, y, x in row.tolist()]
            centroids.append([float(Fraction(sum(int(full[r, c]) for c in cols), len(cols))) for r in range(3)])
        video_pos = torch.tensor(centroids, dtype=torch.float64).T.to(torch.float32)
        positions = torch.cat([full[:, :first].float(), video_pos, full[:, last + 1 :].float()], 1)[:, None]
        table = model.get_input_embeddings()
        emb = torch.cat([table(ids[0, :first]), merged.embeds, table(ids[0, last + 1 :])], 0)
        return greedy_loop(model, emb[None], positions, ids.shape[1] + int(delta[0]), steps), positions


def test_centroid_mode_equals_transformers_at_member_mean_positions(setup):
    from tokencomp import Budget, compress

    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    merged = compress(tokens, "tome", Budget(keep_ratio=0.25))
    sizes = merged.members.offsets.diff()
    assert len(merged) < len(tokens) and int(sizes.max()) > 1, f"tome merged nothing: member counts {sizes.tolist()}"
    inp = hf_inputs(llm, setup["sampled"])
    ref, ref_pos = reference_merged_greedy(llm, inp, merged, NEW_TOKENS)
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS)
    centroid = llm.prefill_video(merged, vin.second_per_grid, mode="centroid", attention="plain")
    ours = llm.ask(centroid, QUESTION, gen).token_ids
    assert ours == ref, f"vidsieve {ours} vs reference {ref}"
    # The reference positions are fractional where rows merged, and differ from keep's (the
    # representative's) positions there; the logits differ too.
    keep = llm.prefill_video(merged, vin.second_per_grid, mode="keep", attention="plain")
    n0 = keep.text_before
    keep_video = prompt_position_ids([n0, keep.span], llm.tokens_per_second, "keep").position_ids[:, n0:]
    ref_video = ref_pos[:, 0, n0 : n0 + len(merged)]
    assert bool((ref_video != ref_video.round()).any()), f"no fractional centroid: {ref_video}"
    assert not torch.equal(ref_video, keep_video.float())
    diff = (llm.question_logits(keep, QUESTION) - llm.question_logits(centroid, QUESTION)).abs().max()
    assert diff > 1e-3, f"keep and centroid logits nearly equal: max diff {diff:.2e}"


def test_centroid_mode_without_merges_is_keep_bit_for_bit(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    for kept in (tokens, tokens.select(torch.arange(0, len(tokens), 2))):
        a = llm.question_logits(llm.prefill_video(kept, vin.second_per_grid, mode="keep"), QUESTION)
        b = llm.question_logits(llm.prefill_video(kept, vin.second_per_grid, mode="centroid"), QUESTION)
        assert torch.equal(a, b), f"max diff {(a - b).abs().max():.2e}"


def test_prefix_reuse_equals_separate_runs(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    questions = [QUESTION, "How many squares are there?", "What color is the square?"]
    gen = GenerationConfig(max_new_tokens=8)
    shared = llm.ask_many(llm.prefill_video(tokens, vin.second_per_grid), questions, gen)
    separate = [llm.ask(llm.prefill_video(tokens, vin.second_per_grid), q, gen) for q in questions]
    assert [a.token_ids for a in shared] == [a.token_ids for a in separate]
    assert len({tuple(a.token_ids) for a in shared}) > 1, "questions do not change the answer: test would be vacuous"


def test_seeded_sampling_is_reproducible(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    prefix = llm.prefill_video(tokens, vin.second_per_grid)

    def run(seed):
        return llm.ask(prefix, QUESTION, GenerationConfig(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=seed)).token_ids

    assert run(7) == run(7)
    assert len({tuple(run(s)) for s in range(4)}) > 1, "different seeds all gave one answer"


def test_stream_pieces_join_to_the_answer(setup):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    prefix = llm.prefill_video(tokens, vin.second_per_grid)
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS)
    pieces = list(llm.stream(prefix, QUESTION, gen))
    assert "".join(pieces) == llm.ask(prefix, QUESTION, gen).text
    assert torch.is_inference_mode_enabled() is False


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(top_p_filter(logits, 0.75))
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [True, False, False, False]


def test_released_hf_tower_gives_the_same_answer(setup):
    small = QwenVL.load(setup["model_dir"], device="cpu", dtype=torch.float32)
    assert not any(True for _ in small.model.model.visual.parameters()), "transformers' tower copy was kept"
    llm, sampled = setup["llm"], setup["sampled"]
    gen = GenerationConfig(max_new_tokens=6)
    vin = small.preprocess(sampled.frames, sampled.time_s, sampled.sampled_fps)
    a = small.ask(small.prefill_video(small.encode(vin), vin.second_per_grid), QUESTION, gen)
    b = llm.ask(llm.prefill_video(setup["tokens"], setup["vin"].second_per_grid), QUESTION, gen)
    assert a.token_ids == b.token_ids


def test_directory_encoder_is_preferred(setup, tmp_path):
    """A checkpoint with encoder_config.json + encoder.safetensors (the demo model's layout) is
    encoded by that encoder, not by the Qwen2.5-VL tower in its model weights."""
    import shutil

    from encoders.config import get_preset
    from encoders.load import save_encoder
    from encoders.vit import VisionEncoder

    model_dir = shutil.copytree(setup["model_dir"], tmp_path / "ckpt")
    torch.manual_seed(11)
    st3d = VisionEncoder(get_preset("st3d-tiny", out_hidden_size=64)).eval()
    save_encoder(st3d, model_dir)
    llm = QwenVL.load(model_dir, device="cpu", dtype=torch.float32)
    assert llm.encoder.config.family == "st3d"
    vin = setup["vin"]
    tokens = llm.encode(vin)
    with torch.no_grad():
        direct = st3d.encode(vin.pixel_values, torch.tensor([list(vin.grid_thw)]), [vin.tubelet_time_s])
    assert torch.equal(tokens.embeds, direct.embeds) and torch.equal(tokens.pos, direct.pos)
    assert not torch.allclose(tokens.embeds, setup["tokens"].embeds, atol=1e-3)
    assert llm.ask(llm.prefill_video(tokens, vin.second_per_grid), QUESTION, GenerationConfig(max_new_tokens=3)).token_ids


def test_bad_inputs(setup, tmp_path):
    llm, tokens, vin = setup["llm"], setup["tokens"], setup["vin"]
    prefix = llm.prefill_video(tokens, vin.second_per_grid)
    with pytest.raises(VidsieveError, match="placeholder"):
        llm.ask(prefix, "what is <|video_pad|> here?")
    with pytest.raises(VidsieveError, match="empty"):
        llm.ask(prefix, "  ")
    with pytest.raises(ModelLoadError, match="config.json"):
        QwenVL.load(tmp_path / "nope")
    with pytest.raises(VidsieveError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="centroid"):
        llm.prefill_video(tokens, vin.second_per_grid, mode="middle")

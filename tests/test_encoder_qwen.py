"""The `qwen2_5_vl` encoder against transformers' own Qwen2.5-VL vision tower on the same weights.

Tiny random configs built here (no downloads); weights are redrawn with a larger spread than the
default init so outputs are far from zero and a wrong op shows up well above the tolerance.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLVisionRotaryEmbedding,
    apply_rotary_pos_emb_vision,
)
from transformers.vision_utils import get_vision_position_ids

from encoders.config import from_hf_vision_config
from encoders.load import CheckpointError, convert_hf_visual, load_qwen2_5_vl
from encoders.rope import rope_tables
from encoders.vit import VisionEncoder
from kernels.rotary import apply_rotary_ref

TOL = 1e-4


def _hf_vision(window_size=112, full=(1,), depth=3, hidden=32, heads=2, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2_5_VLVisionConfig(depth=depth, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads,
                                 out_hidden_size=48, fullatt_block_indexes=list(full), window_size=window_size)
    cfg._attn_implementation = "sdpa"
    model = Qwen2_5_VisionTransformerPretrainedModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _ours_from(hf_model) -> VisionEncoder:
    ours = VisionEncoder(from_hf_vision_config(hf_model.config.to_dict())).eval()
    convert_hf_visual(dict(hf_model.state_dict()), ours, source="test")
    return ours


def _pixels(grid, seed=1):
    n = int(torch.tensor(grid).prod(1).sum())
    return torch.randn(n, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))


def _times(grid):
    return [torch.arange(t, dtype=torch.float32) * 0.5 for t, _, _ in grid]


def _compare(hf_model, ours, grid):
    px = _pixels(grid)
    g = torch.tensor(grid)
    with torch.no_grad():
        ref = hf_model(px, grid_thw=g).pooler_output
        out = ours.encode(px, g, _times(grid))
    assert out.embeds.shape == ref.shape
    assert ref.abs().mean() > 1e-2, "reference output is near zero; the comparison would prove nothing"
    err = (out.embeds - ref).abs().max().item()
    assert err <= TOL, f"ours vs transformers: max abs diff {err} for grid {grid}"
    return out


@pytest.mark.parametrize(
    "window_size,full",
    [(112, (1,)), (56, (0, 2)), (84, ()), (28, (0, 1, 2)), (224, (2,))],
)
@pytest.mark.parametrize(
    "grid",
    [
        [[3, 10, 14]],  # odd merged grid 5 x 7: windows cut partially
        [[2, 6, 22], [1, 8, 4]],  # two videos of different sizes packed; the second is one tubelet
        [[1, 12, 8]],  # an image (T = 1)
    ],
)
def test_matches_transformers(window_size, full, grid):
    hf_model = _hf_vision(window_size, full)
    out = _compare(hf_model, _ours_from(hf_model), grid)
    m = torch.tensor(grid)[:, 1:] // 2
    assert out.grids.tolist() == [[t, h, w] for (t, _, _), (h, w) in zip(grid, m.tolist())]


def test_matches_transformers_more_heads_deeper():
    hf_model = _hf_vision(112, (3,), depth=4, hidden=64, heads=4, seed=5)
    _compare(hf_model, _ours_from(hf_model), [[4, 8, 12]])


def test_rope_reproduces_qwen_vision_rope_exactly():
    hf_model = _hf_vision()
    grid = torch.tensor([[2, 6, 10]])
    pos_hw = get_vision_position_ids(grid, 2)  # [N, 2] HF's (h, w) per patch in HF row order
    rot = Qwen2_5_VLVisionRotaryEmbedding(hf_model.config)
    n, heads, d = pos_hw.shape[0], 2, 16
    q, k = torch.randn(n, heads, d), torch.randn(n, heads, d)
    cos, sin = rot(q, pos_hw)
    ref_q, ref_k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    inv_freq, pair_axis = rope_tables(from_hf_vision_config(hf_model.config.to_dict()))
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.int64), pos_hw], 1)  # t is not rotated in Qwen2.5-VL
    our_q, our_k = apply_rotary_ref(q, k, coords, inv_freq, pair_axis)
    assert torch.equal(our_q, ref_q) and torch.equal(our_k, ref_k)


def test_identical_tubelets_encode_identically():
    # Qwen2.5-VL attention never crosses tubelets and t is not rotated: the same pixels at t=0 and
    # t=1 give the same tokens (st3d is the opposite; see test_encoder_st3d).
    hf_model = _hf_vision()
    ours = _ours_from(hf_model)
    one = _pixels([[1, 4, 4]])
    with torch.no_grad():
        out = ours.encode(torch.cat([one, one]), torch.tensor([[2, 4, 4]]), [torch.tensor([0.0, 1.0])])
    torch.testing.assert_close(out.embeds[:4], out.embeds[4:], atol=1e-6, rtol=0)
    assert out.time_s.tolist() == [0.0] * 4 + [1.0] * 4


def test_all_cells_subset_equals_full_exactly():
    hf_model = _hf_vision(56, (1,))
    ours = _ours_from(hf_model)
    grid = [[2, 6, 10], [1, 4, 4]]
    px, g = _pixels(grid), torch.tensor(grid)
    masks = [torch.ones(2, 3, 5, dtype=torch.bool), torch.ones(1, 2, 2, dtype=torch.bool)]
    with torch.no_grad():
        full = ours.encode(px, g, _times(grid))
        sub = ours.encode(px, g, _times(grid), cell_mask=masks)
    assert torch.equal(full.embeds, sub.embeds) and torch.equal(full.pos, sub.pos)


def _tiny_full_model(tmp_path, **vision):
    torch.manual_seed(0)
    vc = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48,
              fullatt_block_indexes=[1], window_size=56) | vision
    tc = dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
              intermediate_size=64, vocab_size=256, bos_token_id=1, eos_token_id=2)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(vision_config=vc, text_config=tc)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "visual" in name:
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("sharded", [False, True])
def test_load_from_saved_checkpoint(tmp_path, sharded):
    model = _tiny_full_model(tmp_path)
    model.save_pretrained(tmp_path, max_shard_size="40KB" if sharded else "5GB")
    assert (tmp_path / "model.safetensors.index.json").exists() == sharded
    ours, report = load_qwen2_5_vl(tmp_path)
    assert not report.missing and not report.unexpected
    assert len(report.loaded) == len(list(ours.parameters()))
    _compare(model.model.visual, ours, [[2, 6, 10]])


def test_load_accepts_model_visual_prefix(tmp_path):
    model = _tiny_full_model(tmp_path)
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    renamed = {("model." + k if k.startswith("visual.") else k): v for k, v in state.items()}
    assert any(k.startswith("model.visual.") for k in renamed)
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours, _ = load_qwen2_5_vl(tmp_path)
    _compare(model.model.visual, ours, [[1, 4, 6]])


def test_load_names_missing_keys(tmp_path):
    _tiny_full_model(tmp_path).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["visual.blocks.1.attn.qkv.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing blocks\.1\.attn\.qkv\.weight"):
        load_qwen2_5_vl(tmp_path)


def test_load_config_that_does_not_fit(tmp_path):
    _tiny_full_model(tmp_path).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vision_config"]["depth"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing .*blocks\.2\."):
        load_qwen2_5_vl(tmp_path)
    cfg["vision_config"]["depth"] = 1
    cfg["vision_config"]["fullatt_block_indexes"] = [0]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unexpected .*blocks\.1\."):
        load_qwen2_5_vl(tmp_path)


def test_load_bad_vision_config_names_the_file(tmp_path):
    _tiny_full_model(tmp_path).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vision_config"]["fullatt_block_indexes"] = [5]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: .*fullatt_block_indexes"):
        load_qwen2_5_vl(tmp_path)


def test_load_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: not found"):
        load_qwen2_5_vl(tmp_path / "nowhere")


@pytest.mark.gpu
def test_bf16_on_gpu_close_to_fp32():
    hf_model = _hf_vision(112, (1,))
    ours32 = _ours_from(hf_model)
    ours16 = _ours_from(hf_model).to("cuda", torch.bfloat16)
    grid = [[4, 10, 14], [1, 6, 4]]
    px, g = _pixels(grid), torch.tensor(grid)
    with torch.no_grad():
        ref = ours32.encode(px, g, _times(grid)).embeds
        out = ours16.encode(px.cuda(), g, _times(grid)).embeds.float().cpu()
    assert ours16.inv_freq.dtype == torch.float32
    rel = (out - ref).norm() / ref.norm()
    assert rel < 3e-2, f"bf16 vs fp32 relative error {rel}"

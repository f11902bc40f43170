"""The `st3d` encoder (3D RoPE, joint space-time attention), subset encoding, packing, save/load,
configs and the attention backends."""

import json

import pytest
import torch

from encoders.attention import get_backend, list_backends, varlen_attention
from encoders.config import PRESETS, EncoderConfig, get_preset
from encoders.errors import BadRequest
from encoders.layout import build_layout
from encoders.load import CheckpointError, load_encoder, save_encoder
from encoders.rope import rope_tables
from encoders.tokens import grid_positions
from encoders.vit import VisionEncoder


def _model(preset="st3d-tiny", seed=0, **overrides):
    torch.manual_seed(seed)
    model = VisionEncoder(get_preset(preset, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _pixels(grid, seed=1):
    n = int(torch.tensor(grid).prod(1).sum())
    return torch.randn(n, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))


def _times(grid):
    return [torch.arange(t, dtype=torch.float32) * 0.5 + v for v, (t, _, _) in enumerate(grid)]


@torch.no_grad()
def _encode(model, grid, mask=None, px=None):
    px = _pixels(grid) if px is None else px
    return model.encode(px, torch.tensor(grid), _times(grid), cell_mask=mask)


def test_forward_shapes_and_positions():
    model = _model()
    grid = [[3, 6, 8]]
    out = _encode(model, grid)
    assert out.embeds.shape == (3 * 3 * 4, 64)
    assert torch.equal(out.pos, grid_positions(3, 3, 4))
    assert out.grids.tolist() == [[3, 3, 4]]
    assert torch.equal(out.time_s, torch.tensor([0.0, 0.5, 1.0]).repeat_interleave(12))
    assert out.weight.tolist() == [1] * 36 and out.video_id.tolist() == [0] * 36
    assert torch.isfinite(out.embeds).all()


def test_rope_split_per_axis():
    cfg = get_preset("st3d-tiny")  # head_dim 32 -> 16 pairs -> 4 t, 6 h, 6 w
    assert cfg.rope_pairs == (4, 6, 6)
    inv_freq, pair_axis = rope_tables(cfg)
    assert pair_axis.tolist() == [0] * 4 + [1] * 6 + [2] * 6
    assert inv_freq[0] == 1.0 and inv_freq[4] == 1.0 and inv_freq[10] == 1.0  # each band starts its own ladder
    assert inv_freq.dtype == torch.float32
    assert get_preset("st3d").rope_pairs == (8, 12, 12)


def test_time_is_seen_identical_tubelets_differ():
    # Joint space-time attention + t rotation: the same pixels at t=0 and t=1 give different tokens.
    model = _model()
    one = _pixels([[1, 4, 4]])
    with torch.no_grad():
        out = model.encode(torch.cat([one, one]), torch.tensor([[2, 4, 4]]), [torch.tensor([0.0, 1.0])])
    assert (out.embeds[:4] - out.embeds[4:]).abs().max() > 1e-3


def test_all_cells_subset_equals_full_exactly():
    model = _model()
    grid = [[3, 6, 8], [2, 4, 4]]
    full = _encode(model, grid)
    ones = [torch.ones(3, 3, 4, dtype=torch.bool), torch.ones(2, 2, 2, dtype=torch.bool)]
    assert torch.equal(_encode(model, grid, ones).embeds, full.embeds)
    assert torch.equal(_encode(model, grid, [None, ones[1]]).embeds, full.embeds)


def _partial_mask(t, h, w, seed=2):
    mask = torch.rand(t, h, w, generator=torch.Generator().manual_seed(seed)) < 0.4
    mask[0, 0, 0] = True
    return mask


@pytest.mark.parametrize("preset,overrides", [("st3d-tiny", {}), ("qwen2_5_vl-tiny", {"window_size": 56})])
def test_partial_subset_keeps_positions_and_changes_context(preset, overrides):
    model = _model(preset, **overrides)
    grid = [[3, 6, 8]]
    full = _encode(model, grid)
    mask = _partial_mask(3, 3, 4)
    sub = _encode(model, grid, mask)
    kept = mask.flatten()
    assert torch.equal(sub.pos, mask.nonzero())
    assert torch.equal(sub.time_s, full.time_s[kept])
    assert sub.embeds.shape == (int(kept.sum()), model.config.out_hidden_size)
    # Attention context shrank, so the kept cells' tokens are not those of full encoding.
    assert (sub.embeds - full.embeds[kept]).abs().max() > 1e-3


@pytest.mark.parametrize("preset,overrides", [("st3d-tiny", {}), ("qwen2_5_vl-tiny", {"window_size": 56})])
def test_dropped_cells_are_never_seen(preset, overrides):
    model = _model(preset, **overrides)
    grid = [[2, 6, 8]]
    mask = _partial_mask(2, 3, 4, seed=4)
    px = _pixels(grid)
    noisy = px.clone()
    dropped_rows = (~mask).flatten().repeat_interleave(4)
    noisy[dropped_rows] = torch.randn(int(dropped_rows.sum()), px.shape[1]) * 10
    a, b = _encode(model, grid, mask, px), _encode(model, grid, mask, noisy)
    assert torch.equal(a.embeds, b.embeds)
    # The work is skipped, not done and discarded: only kept patches enter the patch embedding.
    seen = []
    hook = model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    _encode(model, grid, mask, px)
    hook.remove()
    assert seen == [int(mask.sum()) * 4]


def test_kept_only_pixel_rows_equal_full_pixel_rows():
    model = _model("qwen2_5_vl-tiny", window_size=56)
    grid = [[2, 6, 8]]
    mask = _partial_mask(2, 3, 4, seed=5)
    px = _pixels(grid)
    kept_rows = mask.flatten().repeat_interleave(4)
    a = _encode(model, grid, mask, px)
    b = _encode(model, grid, mask, px[kept_rows])
    assert torch.equal(a.embeds, b.embeds)
    with pytest.raises(BadRequest, match="pixel_values has 5 rows"):
        _encode(model, grid, mask, px[:5])


def test_windows_are_formed_among_kept_cells():
    cfg = get_preset("qwen2_5_vl-tiny", window_size=56)  # 2 x 2 merged cells per window
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 0, 3] = mask[0, 2, 2] = mask[0, 2, 3] = True
    layout = build_layout(torch.tensor([[1, 6, 8]]), cfg, [mask])
    # windows (0,0): 2 cells, (0,1): 1 cell, (1,1): 2 cells; window (1,0) has none and vanishes.
    assert layout.window_seqlens == [8, 4, 8]
    assert layout.full_seqlens == [20]


@pytest.mark.parametrize("preset,overrides", [("st3d-tiny", {}), ("qwen2_5_vl-tiny", {"window_size": 56})])
def test_packed_equals_separate(preset, overrides):
    model = _model(preset, **overrides)
    grids = [[3, 6, 8], [1, 4, 6], [2, 2, 2]]
    pixels = [_pixels([g], seed=10 + i) for i, g in enumerate(grids)]
    masks = [_partial_mask(3, 3, 4), None, torch.tensor([[[True]], [[False]]])]
    with torch.no_grad():
        packed = model.encode(torch.cat(pixels), torch.tensor(grids), _times(grids), cell_mask=masks)
        alone = [model.encode(px, torch.tensor([g]), [_times(grids)[i]], cell_mask=[masks[i]])
                 for i, (px, g) in enumerate(zip(pixels, grids))]
    parts = packed.split()
    assert len(parts) == 3
    for p, a in zip(parts, alone):
        assert torch.equal(p.pos, a.pos) and torch.equal(p.time_s, a.time_s) and torch.equal(p.grids, a.grids)
        torch.testing.assert_close(p.embeds, a.embeds, atol=1e-5, rtol=0)


def test_empty_subset():
    model = _model()
    out = _encode(model, [[1, 4, 4]], torch.zeros(1, 2, 2, dtype=torch.bool))
    assert out.embeds.shape == (0, 64) and out.pos.shape == (0, 3)


def test_save_load_round_trip(tmp_path):
    model = _model()
    save_encoder(model, tmp_path)
    loaded = load_encoder(tmp_path)
    assert loaded.config == model.config
    grid = [[2, 4, 6]]
    assert torch.equal(_encode(model, grid).embeds, _encode(loaded, grid).embeds)
    cfg = json.loads((tmp_path / "encoder_config.json").read_text())
    cfg["depth"] = 3
    (tmp_path / "encoder_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"encoder\.safetensors.*missing .*blocks\.2\."):
        load_encoder(tmp_path)


def test_bad_inputs_are_user_errors():
    model = _model()
    with pytest.raises(BadRequest, match=r"grid_thw\[0\]"):
        _encode(model, [[2, 5, 4]])
    with pytest.raises(BadRequest, match=r"cell_mask\[0\] must be bool \(2, 2, 2\)"):
        _encode(model, [[2, 4, 4]], torch.ones(2, 2, 3, dtype=torch.bool))
    with pytest.raises(BadRequest, match=r"tubelet_time_s\[0\] must be \[2\]"):
        model.encode(_pixels([[2, 4, 4]]), torch.tensor([[2, 4, 4]]), [torch.zeros(3)])


def test_config_checks_and_presets():
    for name in PRESETS:
        assert EncoderConfig.from_dict(get_preset(name).to_dict()) == get_preset(name)
    with pytest.raises(BadRequest, match="whole bands"):
        get_preset("st3d-tiny", rope_split=(0.3, 0.35, 0.35))
    with pytest.raises(BadRequest, match="summing to 1"):
        get_preset("st3d-tiny", rope_split=(0.25, 0.25, 0.25))
    with pytest.raises(BadRequest, match="not divisible by num_heads"):
        get_preset("st3d-tiny", num_heads=3)
    with pytest.raises(BadRequest, match="known: qwen2_5_vl, qwen2_5_vl-tiny, st3d, st3d-tiny"):
        get_preset("st4d")
    with pytest.raises(BadRequest, match="multiple of a merged cell"):
        get_preset("qwen2_5_vl-tiny", window_size=100)


def test_attention_backends_agree():
    g = torch.Generator().manual_seed(0)
    seqlens = [5, 16, 16, 3, 16, 1]
    q, k, v = (torch.randn(sum(seqlens), 2, 8, generator=g) for _ in range(3))
    ref = get_backend("sdpa_loop")(q, k, v, seqlens)
    for name in ("sdpa_grouped", "sdpa_masked"):
        torch.testing.assert_close(get_backend(name)(q, k, v, seqlens), ref, atol=1e-5, rtol=0)
    # block-diagonal: changing one segment's values leaves every other segment's output alone
    v2 = v.clone()
    v2[5:21] += 1.0
    out2 = varlen_attention(q, k, v2, seqlens)
    assert torch.allclose(out2[:5], ref[:5], atol=1e-6) and torch.allclose(out2[21:], ref[21:], atol=1e-6)
    assert not torch.allclose(out2[5:21], ref[5:21])
    assert {"sdpa_grouped", "xformers", "flash_varlen"} <= set(list_backends())
    with pytest.raises(BadRequest, match="known:"):
        get_backend("nope")


def test_half_precision_weights_keep_float32_rope():
    # bf16 weights (the GPU setting; bf16 matmuls also run on CPU): frequencies stay float32,
    # positions stay int64, and the result tracks the float32 encoder.
    model = _model()
    grid = [[2, 4, 6]]
    ref = _encode(model, grid).embeds
    half = model.to(torch.bfloat16)
    assert half.inv_freq.dtype == torch.float32 and half.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    out = _encode(half, grid)
    assert out.embeds.dtype == torch.bfloat16 and out.pos.dtype == torch.int64
    rel = ((out.embeds.float() - ref).norm() / ref.norm()).item()
    assert rel < 5e-2, f"bf16 vs fp32 relative error {rel}"


def test_gradients_flow_through_packed_subset_encoding():
    model = VisionEncoder(get_preset("st3d-tiny"))
    grid = [[2, 4, 4], [1, 4, 6]]
    masks = [torch.tensor([[[True, False], [True, True]], [[False, True], [False, False]]]), None]
    out = model.encode(_pixels(grid), torch.tensor(grid), _times(grid), cell_mask=masks)
    out.embeds.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_layout_of_a_long_video():
    # 2400 tubelets (~80 min at 1 fps): sort keys must not overflow; tubelets stay in order.
    cfg = get_preset("qwen2_5_vl-tiny", window_size=56)
    layout = build_layout(torch.tensor([[2400, 12, 4], [3, 4, 4]]), cfg)
    t = layout.patch_coords[:, 0]
    assert bool((t[1:48 * 2400] >= t[: 48 * 2400 - 1]).all())
    assert layout.full_seqlens == [48] * 2400 + [16] * 3
    assert layout.window_seqlens == [16, 16, 16] * 2400 + [16] * 3
    assert torch.equal(layout.perm[layout.restore], torch.arange(layout.perm.numel()))


@torch.no_grad()
def test_absolute_positions_reach_the_features():
    # Identical patches everywhere: with RoPE only every token comes out the same (attention values
    # carry no coordinates); with abs_pos_axes ("h", "w") (the st3d default) tokens differ by
    # column and row, and only by them (same (h, w) in another tubelet: same token).
    grid = [[2, 4, 6]]
    n = 2 * 4 * 6
    px = _pixels([[1, 1, 1]]).repeat(n, 1)
    blind = _encode(_model(abs_pos_axes=()), grid, px=px).embeds
    assert torch.allclose(blind, blind[:1].expand_as(blind), atol=1e-5)
    out = _encode(_model(), grid, px=px)
    assert get_preset("st3d-tiny").abs_pos_axes == ("h", "w")
    by_cell = {}
    for row, (t, h, w) in zip(out.embeds, out.pos.tolist()):
        by_cell.setdefault((h, w), []).append(row)
    for rows in by_cell.values():
        assert torch.allclose(rows[0], rows[1], atol=1e-3)
    firsts = torch.stack([rows[0] for rows in by_cell.values()])
    assert torch.cdist(firsts, firsts).add(torch.eye(len(firsts)) * 1e9).min() > 1e-3
    with pytest.raises(BadRequest, match="abs_pos_axes"):
        get_preset("st3d-tiny", abs_pos_axes=("h", "x"))

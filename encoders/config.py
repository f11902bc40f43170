"""`EncoderConfig`: every number that shapes a vision encoder, checked once, with presets as data.

Two families share one implementation (`encoders/vit.py`):
- `qwen2_5_vl`: Qwen2.5-VL's vision tower. 2D (h, w) RoPE, window attention within each tubelet
  plus a few full-attention layers whose span is one tubelet (frame pair).
- `st3d`: vidsieve's own encoder. 3D (t, h, w) RoPE with a configurable band split and joint
  space-time full attention over the whole video.

Presets are kwargs dicts (`PRESETS`), a tiny one per family for tests; `get_preset(name)` lists the
known names on a miss; `from_hf_vision_config(d)` reads a checkpoint's `vision_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction

from encoders.errors import BadRequest

FAMILIES = ("qwen2_5_vl", "st3d")
AXES = ("t", "h", "w")
SPANS = ("tubelet", "video")
ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "quick_gelu")


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a vision encoder. Derived fields (after `norm_eps`) are computed, not passed.

    window_size: side of an attention window in pixels (Qwen2.5-VL: 112 = 4 merged cells of 28 px);
        None means every layer is a full-attention layer.
    fullatt_block_indexes: layers with full attention; the others attend within windows.
    full_attention_span: "tubelet" (Qwen2.5-VL: full layers see one tubelet) or "video" (st3d:
        joint space-time attention over all of a video's tokens).
    abs_pos_axes / abs_pos_pairs: axes whose absolute patch coordinate is also added to the patch
        embedding, as `abs_pos_pairs` sin/cos pairs per axis through a learned projection (empty:
        RoPE only, as Qwen2.5-VL). RoPE alone makes a token's content position-blind: attention
        values carry no coordinates, so "where" and "which way" must be inferred from image edges;
        the demo model needs them in its features (see pipeline/train_demo.py).
    rope_axes / rope_split: which coordinate axes rotate and the fraction of the head's D/2
        rotation pairs each owns, in channel order (Qwen2.5-VL: ("h", "w"), (1/2, 1/2)).
    """

    family: str
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    out_hidden_size: int
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    hidden_act: str = "silu"
    window_size: int | None = 112
    fullatt_block_indexes: tuple[int, ...] = ()
    full_attention_span: str = "tubelet"
    rope_axes: tuple[str, ...] = ("h", "w")
    rope_split: tuple[float, ...] = (0.5, 0.5)
    rope_theta: float = 10000.0
    abs_pos_axes: tuple[str, ...] = ()
    abs_pos_pairs: int = 8
    norm_eps: float = 1e-6
    # ---- derived in __post_init__ ----
    head_dim: int = field(init=False)
    rope_pairs: tuple[int, ...] = field(init=False)
    window_cells: int | None = field(init=False)
    layer_is_full: tuple[bool, ...] = field(init=False)
    patch_dim: int = field(init=False)

    def __post_init__(self):
        def bad(msg: str):
            raise BadRequest(f"EncoderConfig({self.family!r}): {msg}")

        if self.family not in FAMILIES:
            bad(f"family must be one of {FAMILIES}")
        for name in ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "in_channels",
                     "patch_size", "temporal_patch_size", "spatial_merge_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                bad(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            bad(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if head_dim % 2:
            bad(f"head_dim {head_dim} must be even for rotary embedding")
        if self.hidden_act not in ACTIVATIONS:
            bad(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.full_attention_span not in SPANS:
            bad(f"full_attention_span must be one of {SPANS}, got {self.full_attention_span!r}")
        full = tuple(int(i) for i in self.fullatt_block_indexes)
        if any(i < 0 or i >= self.depth for i in full):
            bad(f"fullatt_block_indexes {full} out of range for depth {self.depth}")
        merged_px = self.patch_size * self.spatial_merge_size
        if self.window_size is None:
            window_cells, layer_is_full = None, (True,) * self.depth
        else:
            if self.window_size < merged_px or self.window_size % merged_px:
                bad(f"window_size {self.window_size} px must be a positive multiple of a merged cell ({merged_px} px)")
            window_cells = self.window_size // merged_px
            layer_is_full = tuple(i in full for i in range(self.depth))
        rope_pairs = _split_pairs(self.rope_axes, self.rope_split, head_dim // 2, bad)
        if self.rope_theta <= 0:
            bad(f"rope_theta must be > 0, got {self.rope_theta}")
        abs_axes = tuple(self.abs_pos_axes)
        if len(set(abs_axes)) != len(abs_axes) or any(a not in AXES for a in abs_axes):
            bad(f"abs_pos_axes {abs_axes} must be distinct names from {AXES}")
        if not isinstance(self.abs_pos_pairs, int) or self.abs_pos_pairs < 1:
            bad(f"abs_pos_pairs must be a positive int, got {self.abs_pos_pairs!r}")
        object.__setattr__(self, "abs_pos_axes", abs_axes)
        object.__setattr__(self, "fullatt_block_indexes", full)
        object.__setattr__(self, "rope_axes", tuple(self.rope_axes))
        object.__setattr__(self, "rope_split", tuple(float(x) for x in self.rope_split))
        object.__setattr__(self, "head_dim", head_dim)
        object.__setattr__(self, "rope_pairs", rope_pairs)
        object.__setattr__(self, "window_cells", window_cells)
        object.__setattr__(self, "layer_is_full", layer_is_full)
        object.__setattr__(self, "patch_dim", self.in_channels * self.temporal_patch_size * self.patch_size**2)

    @property
    def merge_unit(self) -> int:
        """Patches per merged cell (4 for a 2x2 merge)."""
        return self.spatial_merge_size**2

    def to_dict(self) -> dict:
        """The init fields only (what `EncoderConfig(**d)` takes back)."""
        d = asdict(self)
        for name in ("head_dim", "rope_pairs", "window_cells", "layer_is_full", "patch_dim"):
            d.pop(name)
        d["fullatt_block_indexes"] = list(d["fullatt_block_indexes"])
        d["rope_axes"] = list(d["rope_axes"])
        d["rope_split"] = list(d["rope_split"])
        d["abs_pos_axes"] = list(d["abs_pos_axes"])
        return d

    @staticmethod
    def from_dict(d: dict) -> "EncoderConfig":
        d = dict(d)
        for name in ("fullatt_block_indexes", "rope_axes", "rope_split", "abs_pos_axes"):
            if name in d:
                d[name] = tuple(d[name])
        return EncoderConfig(**d)


def _split_pairs(axes, split, n_pairs: int, bad) -> tuple[int, ...]:
    """Rotation pairs per axis from fractions; each band must be a whole number of pairs."""
    axes, split = tuple(axes), tuple(split)
    if not axes or len(axes) != len(split) or len(set(axes)) != len(axes) or any(a not in AXES for a in axes):
        bad(f"rope_axes {axes} must be distinct names from {AXES}, one rope_split fraction each (got {split})")
    fracs = [Fraction(x).limit_denominator(1000) for x in split]
    if sum(fracs) != 1 or any(f <= 0 for f in fracs):
        bad(f"rope_split {split} must be positive fractions summing to 1")
    pairs = tuple(f * n_pairs for f in fracs)
    if any(p.denominator != 1 for p in pairs):
        bad(f"rope_split {split} does not divide the head's {n_pairs} rotation pairs into whole bands")
    return tuple(int(p) for p in pairs)


# ---- presets (data) ----------------------------------------------------------------------------

_QWEN_COMMON = dict(family="qwen2_5_vl", window_size=112, full_attention_span="tubelet", rope_axes=("h", "w"),
                    rope_split=(0.5, 0.5), hidden_act="silu")
_ST3D_COMMON = dict(family="st3d", window_size=None, full_attention_span="video", rope_axes=("t", "h", "w"),
                    rope_split=(0.25, 0.375, 0.375), hidden_act="silu", abs_pos_axes=("h", "w"))

PRESETS: dict[str, dict] = {
    # The vision tower shared by Qwen2.5-VL 3B/7B/32B/72B (out_hidden_size is the LLM width: 7B here).
    "qwen2_5_vl": dict(_QWEN_COMMON, depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420,
                       out_hidden_size=3584, fullatt_block_indexes=(7, 15, 23, 31)),
    "qwen2_5_vl-tiny": dict(_QWEN_COMMON, depth=4, hidden_size=64, num_heads=2, intermediate_size=96,
                            out_hidden_size=48, fullatt_block_indexes=(1, 3)),
    # vidsieve's demo encoder: head_dim 64 -> 32 pairs -> 8 t, 12 h, 12 w.
    "st3d": dict(_ST3D_COMMON, depth=8, hidden_size=384, num_heads=6, intermediate_size=1024, out_hidden_size=512),
    # head_dim 32 -> 16 pairs -> 4 t, 6 h, 6 w.
    "st3d-tiny": dict(_ST3D_COMMON, depth=2, hidden_size=64, num_heads=2, intermediate_size=128, out_hidden_size=64),
}


def get_preset(name: str, **overrides) -> EncoderConfig:
    """EncoderConfig from a named preset, with keyword overrides."""
    if name not in PRESETS:
        raise BadRequest(f"unknown encoder preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return EncoderConfig(**{**PRESETS[name], **overrides})


def from_hf_vision_config(vision_config: dict) -> EncoderConfig:
    """EncoderConfig for a Hugging Face Qwen2.5-VL `vision_config` (a dict from config.json).

    Accepts the names older checkpoints use (`in_chans`, `spatial_patch_size`, top-level `rope_theta`).
    """
    vc = dict(vision_config)
    rope = vc.get("rope_parameters") or {}
    theta = rope.get("rope_theta", vc.get("rope_theta", 10000.0))
    if rope.get("rope_type", "axial") not in ("axial", "default"):
        raise BadRequest(f"vision_config.rope_parameters.rope_type {rope.get('rope_type')!r} is not supported (axial only)")
    missing = [k for k in ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size") if k not in vc]
    if missing:
        raise BadRequest(f"vision_config lacks {missing}; is this a Qwen2.5-VL checkpoint?")
    return EncoderConfig(**{
        **_QWEN_COMMON,
        "hidden_act": vc.get("hidden_act", "silu"),
        "depth": int(vc["depth"]),
        "hidden_size": int(vc["hidden_size"]),
        "num_heads": int(vc["num_heads"]),
        "intermediate_size": int(vc["intermediate_size"]),
        "out_hidden_size": int(vc["out_hidden_size"]),
        "in_channels": int(vc.get("in_channels", vc.get("in_chans", 3))),
        "patch_size": int(vc.get("patch_size", vc.get("spatial_patch_size", 14))),
        "temporal_patch_size": int(vc.get("temporal_patch_size", 2)),
        "spatial_merge_size": int(vc.get("spatial_merge_size", 2)),
        "window_size": int(vc.get("window_size", 112)),
        "fullatt_block_indexes": tuple(int(i) for i in vc.get("fullatt_block_indexes", ())),
        "rope_theta": float(theta),
    })

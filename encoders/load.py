"""Weights in and out: Qwen2.5-VL `visual.*` from a local HF checkpoint, and vidsieve's own format.

The HF -> vidsieve name map is data (below): `{}` is a layer index, `None` a deliberate drop.
Fused projections (gate + up -> gate_up) have their own table. The loader never guesses: any
checkpoint tensor with nowhere to go, any parameter left unfilled and any shape mismatch is
reported, and a checkpoint that does not fit raises `CheckpointError` naming the file and keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from encoders.config import EncoderConfig, from_hf_vision_config
from encoders.errors import BadRequest, VidsieveError
from encoders.vit import VisionEncoder

# HF name (after the `visual.` prefix) -> vidsieve parameter name; None = dropped on purpose.
QWEN2_5_VL_WEIGHT_MAP: dict[str, str | None] = {
    "patch_embed.proj.weight": "patch_embed.proj.weight",
    "blocks.{}.norm1.weight": "blocks.{}.norm1.weight",
    "blocks.{}.norm2.weight": "blocks.{}.norm2.weight",
    "blocks.{}.attn.qkv.weight": "blocks.{}.attn.qkv.weight",
    "blocks.{}.attn.qkv.bias": "blocks.{}.attn.qkv.bias",
    "blocks.{}.attn.proj.weight": "blocks.{}.attn.proj.weight",
    "blocks.{}.attn.proj.bias": "blocks.{}.attn.proj.bias",
    "blocks.{}.mlp.down_proj.weight": "blocks.{}.mlp.down.weight",
    "blocks.{}.mlp.down_proj.bias": "blocks.{}.mlp.down.bias",
    "merger.ln_q.weight": "merger.norm.weight",
    "merger.mlp.0.weight": "merger.fc1.weight",
    "merger.mlp.0.bias": "merger.fc1.bias",
    "merger.mlp.2.weight": "merger.fc2.weight",
    "merger.mlp.2.bias": "merger.fc2.bias",
    # Recomputed in float32 from the config (some older exports saved the buffer).
    "rotary_pos_emb.inv_freq": None,
}

# HF name -> (vidsieve fused parameter, shard index, shard count); shards stack along dim 0.
QWEN2_5_VL_STACKED_MAP: dict[str, tuple[str, int, int]] = {
    "blocks.{}.mlp.gate_proj.weight": ("blocks.{}.mlp.gate_up.weight", 0, 2),
    "blocks.{}.mlp.up_proj.weight": ("blocks.{}.mlp.gate_up.weight", 1, 2),
    "blocks.{}.mlp.gate_proj.bias": ("blocks.{}.mlp.gate_up.bias", 0, 2),
    "blocks.{}.mlp.up_proj.bias": ("blocks.{}.mlp.gate_up.bias", 1, 2),
}

# transformers 4.x checkpoints say `visual.`; 5.x in-memory names (and some re-exports) `model.visual.`.
VISUAL_PREFIXES = ("model.visual.", "visual.")

ST3D_WEIGHTS = "encoder.safetensors"
ST3D_CONFIG = "encoder_config.json"


class CheckpointError(VidsieveError):
    """A checkpoint directory is missing, incomplete or does not fit the encoder."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _compile(table: dict) -> list[tuple[re.Pattern, object]]:
    return [(re.compile("^" + re.escape(k).replace(r"\{\}", r"(\d+)") + "$"), v) for k, v in table.items()]


_PLAIN = _compile(QWEN2_5_VL_WEIGHT_MAP)
_STACKED = _compile(QWEN2_5_VL_STACKED_MAP)


def map_name(hf_name: str):
    """HF name (prefix stripped) -> ("plain", ours) | ("stacked", ours, shard, count) | ("drop",) | None."""
    for pat, target in _PLAIN:
        if m := pat.match(hf_name):
            return ("drop",) if target is None else ("plain", target.replace("{}", m.group(1) if m.groups() else ""))
    for pat, (target, shard, count) in _STACKED:
        if m := pat.match(hf_name):
            return ("stacked", target.replace("{}", m.group(1)), shard, count)
    return None


def convert_hf_visual(hf_tensors: dict[str, torch.Tensor], model: VisionEncoder, source: str = "checkpoint") -> LoadReport:
    """Copy HF `visual.*` tensors (prefix already stripped) into `model` through the name map.

    Raises CheckpointError listing missing / unexpected names and shape mismatches.
    """
    params = dict(model.named_parameters())
    report = LoadReport()
    shards: dict[str, dict[int, torch.Tensor]] = {}
    counts: dict[str, int] = {}
    bad_shapes = []
    with torch.no_grad():
        for name, tensor in hf_tensors.items():
            rule = map_name(name)
            if rule is None or (rule[0] != "drop" and rule[1] not in params):
                report.unexpected.append(name)
            elif rule[0] == "drop":
                report.dropped.append(name)
            elif rule[0] == "plain":
                target = params[rule[1]]
                if tuple(target.shape) != tuple(tensor.shape):
                    bad_shapes.append(f"{name} {tuple(tensor.shape)} vs {rule[1]} {tuple(target.shape)}")
                    continue
                target.copy_(tensor.to(target.dtype))
                report.loaded.append(rule[1])
            else:
                _, target_name, shard, count = rule
                shards.setdefault(target_name, {})[shard] = tensor
                counts[target_name] = count
        for target_name, parts in shards.items():
            if len(parts) != counts[target_name]:
                continue  # reported as missing below
            fused = torch.cat([parts[i] for i in range(counts[target_name])], 0)
            target = params[target_name]
            if tuple(target.shape) != tuple(fused.shape):
                bad_shapes.append(f"{target_name} {tuple(fused.shape)} (stacked) vs {tuple(target.shape)}")
                continue
            target.copy_(fused.to(target.dtype))
            report.loaded.append(target_name)
    report.missing = sorted(set(params) - set(report.loaded))
    problems = []
    if report.missing:
        problems.append(f"missing {_short(report.missing)}")
    if report.unexpected:
        problems.append(f"unexpected {_short(report.unexpected)}")
    if bad_shapes:
        problems.append(f"shape mismatch {_short(bad_shapes)}")
    if problems:
        raise CheckpointError(f"{source}: vision weights do not fit the encoder config: " + "; ".join(problems))
    return report


def _short(names: list[str], limit: int = 8) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _visual_files(model_dir: Path) -> dict[str, list[str]]:
    """Shard file -> the full tensor names under a visual prefix it holds."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            if name.startswith(VISUAL_PREFIXES):
                files.setdefault(fname, []).append(name)
        return files
    single = model_dir / "model.safetensors"
    if not single.exists():
        raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json (safetensors checkpoints only)")
    with safe_open(str(single), "pt") as f:
        return {"model.safetensors": [k for k in f.keys() if k.startswith(VISUAL_PREFIXES)]}


def read_hf_config(model_dir: str | Path) -> EncoderConfig:
    """EncoderConfig from a checkpoint directory's config.json (its `vision_config`)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: not found; pass a local Hugging Face Qwen2.5-VL checkpoint directory")
    cfg = json.loads(path.read_text())
    if "vision_config" not in cfg:
        raise CheckpointError(f"{path}: has no vision_config; is this a Qwen2.5-VL checkpoint?")
    try:
        return from_hf_vision_config(cfg["vision_config"])
    except BadRequest as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_qwen2_5_vl(model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    attn_backend: str = "auto") -> tuple[VisionEncoder, LoadReport]:
    """Build a `qwen2_5_vl` VisionEncoder from a local HF checkpoint directory and load its visual weights."""
    model_dir = Path(model_dir)
    config = read_hf_config(model_dir)
    model = VisionEncoder(config, attn_backend=attn_backend)
    tensors: dict[str, torch.Tensor] = {}
    files = _visual_files(model_dir)
    for fname, names in files.items():
        path = model_dir / fname
        if not path.exists():
            raise CheckpointError(f"{path}: listed in model.safetensors.index.json but not present")
        with safe_open(str(path), "pt") as f:
            for full in names:
                short = full.removeprefix("model.visual.").removeprefix("visual.")
                if short in tensors:
                    raise CheckpointError(f"{path}: {short!r} appears under both visual. and model.visual.")
                tensors[short] = f.get_tensor(full)
    if not tensors:
        raise CheckpointError(f"{model_dir}: no tensors named visual.* or model.visual.*; is this a Qwen2.5-VL checkpoint?")
    source = str(model_dir / (next(iter(files)) if len(files) == 1 else "model.safetensors.index.json"))
    report = convert_hf_visual(tensors, model, source)
    return model.to(device=device, dtype=dtype).eval(), report


def save_encoder(model: VisionEncoder, out_dir: str | Path) -> Path:
    """Save any VisionEncoder as `encoder.safetensors` + `encoder_config.json` (vidsieve's own format)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / ST3D_WEIGHTS), metadata={"format": "pt", "vidsieve": "encoder"})
    (out / ST3D_CONFIG).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return out


def load_encoder(model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 attn_backend: str = "auto") -> VisionEncoder:
    """Load an encoder saved by `save_encoder` (e.g. the st3d demo encoder); strict about names and shapes."""
    d = Path(model_dir)
    cfg_path, w_path = d / ST3D_CONFIG, d / ST3D_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.exists():
            raise CheckpointError(f"{p}: not found; expected a directory written by encoders.load.save_encoder")
    config = EncoderConfig.from_dict(json.loads(cfg_path.read_text()))
    model = VisionEncoder(config, attn_backend=attn_backend)
    with safe_open(str(w_path), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    params = dict(model.state_dict())
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(params[k].shape)}" for k in set(state) & set(params)
           if state[k].shape != params[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{w_path}: does not fit {cfg_path.name}: missing {_short(missing)}; "
                              f"unexpected {_short(unexpected)}; shape mismatch {_short(bad)}")
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()

"""Train `vidsieve-tiny`, the shipped demo model, on the synthetic video QA of `pipeline/synthqa.py`.

    vidsieve train-demo --out runs/demo --minutes 100         # resumes from runs/demo/ckpt.pt
    vidsieve train-demo --out runs/demo --export models/vidsieve-tiny

The model is vidsieve's own `st3d` encoder (3D (t, h, w) RoPE, joint space-time attention) feeding a
small Qwen2.5-VL text model (transformers' class, M-RoPE) with a word-level tokenizer. It is saved
as a Qwen2.5-VL checkpoint directory (config, text weights, tokenizer, chat template, processor)
plus `encoder.safetensors` / `encoder_config.json`, which `QwenVL.load` prefers to the checkpoint's
own vision tower. The Qwen2.5-VL vision tower inside the checkpoint is a 1-layer placeholder that
nothing runs (transformers' class insists on having one).

Training reuses the inference path exactly: the checkpoint's processor, the same encoder call, the
chat template split by `QwenVL.render`, M-RoPE positions from `pipeline.positions`. It sees full
token streams only; compression at inference is training-free. Batches are rendered on the fly from
seeds (`split_seed("train", i)`), so a run is deterministic given its seed and resumes exactly
from its last checkpoint (step, weights, optimizer, schedule).

Besides the answer's cross-entropy, each visual token is supervised with what its cell holds
(colour, shape kind, motion, first appearance: `pipeline/synth_targets.py`, `aux_targets`, weight
`aux_weight`) through linear heads
that are not exported. The answer word alone is a few bits per video: trained on it alone, this model
sat at chance on the motion, order and position families for thousands of steps (models/vidsieve-tiny/README.md).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from encoders.config import get_preset
from encoders.errors import BadRequest
from encoders.load import save_encoder
from encoders.vit import VisionEncoder
from pipeline.positions import VideoSpan, prompt_position_ids
from pipeline.synth_targets import TARGET_CLASSES, cell_targets
from pipeline.synthqa import SynthConfig, make_item, split_seed, vocabulary

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
SYSTEM_PROMPT = "You are a helpful assistant."
# Qwen2.5-VL's conversation format; the word-level tokenizer drops the newlines, which carry nothing.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class DemoRecipe:
    """Model sizes and the optimisation schedule. Head dim 32 -> 16 rotary pairs: 4 t, 6 h, 6 w.

    The defaults are the recipe of the shipped models/vidsieve-tiny (its training.json), so
    `vidsieve train-demo` reproduces it; the other fields are there for experiments.
    """

    width: int = 128
    encoder_depth: int = 3
    encoder_heads: int = 4
    encoder_mlp: int = 256
    # Absolute sin/cos coordinates of these axes added to the patch embedding
    # (EncoderConfig.abs_pos_axes); () = RoPE only. RoPE alone leaves token content position-blind.
    encoder_abs_pos: tuple[str, ...] = ("t", "h", "w")
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_mlp: int = 384
    mrope_section: tuple[int, int, int] = (4, 6, 6)
    # M-RoPE temporal positions per second (Qwen2.5-VL: 2). At 8 sampled fps and 2-frame tubelets, 2
    # puts consecutive tubelets at t = 0, 0, 1, 1, ...; 8 gives each tubelet its own position.
    tokens_per_second: int = 8
    text_rope_theta: float = 10000.0
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 100
    total_steps: int = 14000
    weight_decay: float = 0.01
    # Weight of the auxiliary per-token loss (`AuxHeads`: what each visual token's cell holds, from
    # `pipeline.synth_targets`); 0 = answer loss only.
    aux_weight: float = 1.0
    # Which per-token targets the auxiliary heads predict (`pipeline.synth_targets.TARGET_CLASSES`).
    aux_targets: tuple[str, ...] = ("colour", "kind", "motion", "appear")
    seed: int = 0
    frames: int = 8
    size: int = 112


# What a checkpoint written before a recipe field existed was trained with (not today's defaults).
_RECIPE_BEFORE_FIELD = {"encoder_abs_pos": (), "text_rope_theta": 10000.0, "aux_weight": 0.0,
                        "aux_targets": ("colour", "kind", "motion")}


def build_tokenizer(words: list[str]):
    """A lower-casing word-level tokenizer: specials, then the synthetic QA words, then [UNK]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in SPECIAL_TOKENS + ["[UNK]"] + words:
        vocab.setdefault(w, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.normalizer = normalizers.Lowercase()
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    raw.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:], model_max_length=4096,
    )


def corpus_words() -> list[str]:
    """Every word the tokenizer knows: the QA vocabulary and the chat template's fixed text, split
    the way the tokenizer's pre-tokenizer splits them (so nothing in training is [UNK])."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace()
    words: list[str] = []
    for text in vocabulary() + [SYSTEM_PROMPT, "system user assistant"]:
        for w, _ in split.pre_tokenize_str(text.lower()):
            if w not in words:
                words.append(w)
    return words


def build_model(recipe: DemoRecipe, out_dir: Path):
    """Write tokenizer + processor + an untrained model into `out_dir`; return (QwenVL, encoder)."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from pipeline.llm import QwenVL

    tokenizer = build_tokenizer(corpus_words())
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = recipe.width // recipe.text_heads
    if sum(recipe.mrope_section) * 2 != head_dim:
        raise ValueError(f"mrope_section {recipe.mrope_section} must cover head_dim/2 = {head_dim // 2}")
    config = Qwen2_5_VLConfig(
        # A placeholder tower: nothing runs it (encoder.safetensors is the real encoder).
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=recipe.width,
                           tokens_per_second=recipe.tokens_per_second, window_size=112, fullatt_block_indexes=[0]),
        text_config=dict(hidden_size=recipe.width, intermediate_size=recipe.text_mlp,
                         num_hidden_layers=recipe.text_layers, num_attention_heads=recipe.text_heads,
                         num_key_value_heads=recipe.text_kv_heads, max_position_embeddings=4096,
                         vocab_size=len(tokenizer), tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": recipe.text_rope_theta,
                                          "mrope_section": list(recipe.mrope_section)},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(recipe.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    encoder = VisionEncoder(get_preset(
        "st3d", depth=recipe.encoder_depth, hidden_size=recipe.width, num_heads=recipe.encoder_heads,
        intermediate_size=recipe.encoder_mlp, out_hidden_size=recipe.width, abs_pos_axes=tuple(recipe.encoder_abs_pos)))
    pix = recipe.size * recipe.size
    common = dict(patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=56 * 56, max_pixels=pix)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=False), chat_template=CHAT_TEMPLATE)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    return QwenVL(model, processor, str(out_dir), encoder=encoder), encoder


# ---- one batch -------------------------------------------------------------------------------


def batch_items(split: str, start: int, n: int, cfg: SynthConfig, base_seed: int):
    return [make_item(split_seed(split, start + i, base_seed), cfg) for i in range(n)]


class AuxHeads(torch.nn.Module):
    """Linear read-outs of each visual token's cell contents (colour, kind, motion classes of
    `pipeline.synth_targets`). Training only: they shape what the encoder puts in a token and are
    not part of the exported model."""

    def __init__(self, width: int, targets: tuple[str, ...] = tuple(TARGET_CLASSES)):
        super().__init__()
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(width, TARGET_CLASSES[name]) for name in targets})

    def loss(self, tokens, items, cell_px: int, tubelet: int) -> torch.Tensor:
        """Mean cross-entropy over heads; every visual token of every video is supervised."""
        embeds, targets = [], {name: [] for name in self.heads}
        for tok, it in zip(tokens, items):
            cells = cell_targets(it.scene, cell_px, tubelet)
            t, h, w = tok.pos.T.numpy()
            for name in targets:
                targets[name].append(torch.from_numpy(cells[name][t, h, w]))
            embeds.append(tok.embeds)
        x = torch.cat(embeds)
        return sum(torch.nn.functional.cross_entropy(head(x).float(), torch.cat(targets[name]))
                   for name, head in self.heads.items()) / len(self.heads)


def forward_batch(llm, encoder, items, fps: float = 8.0, aux: AuxHeads | None = None):
    """Teacher-forced forward of a batch -> (loss, per-item exact match [B] bool, aux loss or None).

    Builds each prompt exactly as inference does: `render(question)` around the video, the kept
    (here: all) video tokens at their M-RoPE positions, then the answer and <|im_end|>.
    """
    proc = llm.processor.video_processor
    from transformers.video_utils import VideoMetadata

    frames = [it.frames for it in items]
    out = proc(videos=frames, video_metadata=[VideoMetadata(total_num_frames=len(f), fps=fps) for f in frames],
               do_sample_frames=False, return_tensors="pt")
    grids = out["video_grid_thw"]
    tp = llm.temporal_patch_size
    times = [torch.arange(int(g[0]), dtype=torch.float32) * tp / fps for g in grids]
    tokens = encoder.encode(out["pixel_values_videos"], grids, times).split()
    aux_loss = None if aux is None else aux.loss(tokens, items, int(proc.patch_size) * llm.merge_size, tp)
    before, _ = llm.render("")
    ids_before = llm._tokenize(before)
    emb_table = llm.model.get_input_embeddings()
    seqs, poss, labels = [], [], []
    for it, tok in zip(items, tokens):
        _, after = llm.render(it.question)
        suffix = llm._tokenize(after)
        answer = llm._tokenize(it.answer) + [llm.tokenizer.eos_token_id]
        span = VideoSpan(pos=tok.pos, grid=tuple(int(x) for x in tok.grids[0]), second_per_grid=tp / fps)
        positions = prompt_position_ids([len(ids_before), span, len(suffix) + len(answer)], llm.tokens_per_second,
                                        "keep", "spatial").position_ids
        ids = torch.tensor(ids_before + [llm.video_token_id] * len(tok) + suffix + answer)
        emb = emb_table(ids)
        slots = ids == llm.video_token_id
        emb = emb.masked_scatter(slots[:, None], tok.embeds.to(emb.dtype))
        lab = torch.full((len(ids),), -100)
        lab[len(ids) - len(answer) - 1 : len(ids) - 1] = torch.tensor(answer)  # predict answer[k] at the token before it
        seqs.append(emb), poss.append(positions), labels.append(lab)
    length = max(s.shape[0] for s in seqs)
    emb = torch.stack([torch.nn.functional.pad(s, (0, 0, 0, length - s.shape[0])) for s in seqs])
    pos = torch.stack([torch.nn.functional.pad(p, (0, length - p.shape[1])) for p in poss], 1)  # [3, B, L]
    lab = torch.stack([torch.nn.functional.pad(x, (0, length - x.shape[0]), value=-100) for x in labels])
    # Right padding: causal attention means padded tail positions never affect the real ones.
    hidden = llm.model.model.language_model(inputs_embeds=emb, position_ids=pos, use_cache=False).last_hidden_state
    logits = llm.model.lm_head(hidden).float()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=-100)
    pred = logits.argmax(-1)
    supervised = lab != -100
    exact = ((pred == lab) | ~supervised).all(dim=1)
    return loss, exact, aux_loss


def evaluate(llm, encoder, split: str, n: int, cfg: SynthConfig, base_seed: int, batch: int = 32) -> dict:
    """Teacher-forced exact-match accuracy (= greedy generation's answer) overall and per family."""
    encoder.eval(), llm.model.eval()
    per_family: dict[str, list[int]] = {}
    with torch.no_grad():
        for start in range(0, n, batch):
            items = batch_items(split, start, min(batch, n - start), cfg, base_seed)
            _, exact, _ = forward_batch(llm, encoder, items)
            for it, ok in zip(items, exact.tolist()):
                per_family.setdefault(it.family, []).append(int(ok))
    encoder.train(), llm.model.train()
    total = [x for v in per_family.values() for x in v]
    return {"accuracy": sum(total) / len(total), "n": len(total),
            "families": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_family.items())}}


def lr_at(step: int, recipe: DemoRecipe) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = min(1.0, (step - recipe.warmup) / max(1, recipe.total_steps - recipe.warmup))
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- the run ---------------------------------------------------------------------------------


def train(out: Path, recipe: DemoRecipe, minutes: float, eval_every: int, eval_n: int, stop_at_step: int | None = None,
          init_from: Path | None = None) -> dict:
    """Train (or resume) in `out` until the schedule ends, `minutes` pass or `stop_at_step` is reached.

    init_from: a model directory written by `export` (e.g. models/vidsieve-tiny) whose weights start a
    new run (fresh optimizer and schedule); ignored when `out` already holds a checkpoint to resume.
    """
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    cfg = SynthConfig(frames=recipe.frames, size=recipe.size)
    model_dir = out / "model"
    llm, encoder = build_model(recipe, model_dir)
    aux = AuxHeads(recipe.width, recipe.aux_targets) if recipe.aux_weight > 0 else None
    params = list(llm.model.model.language_model.parameters()) + list(llm.model.lm_head.parameters()) + list(encoder.parameters())
    params += list(aux.parameters()) if aux is not None else []
    params = list({id(p): p for p in params}.values())  # tied embeddings appear twice
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98))
    ckpt = out / "ckpt.pt"
    step, history = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if recipe_of(state) != recipe:
            raise SystemExit(f"{ckpt} was trained with a different recipe; use a fresh --out")
        llm.model.load_state_dict(state["model"]), encoder.load_state_dict(state["encoder"])
        if aux is not None:
            aux.load_state_dict(state["aux"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        torch.set_rng_state(state["rng"])
        log.warning("resumed from %s at step %d", ckpt, step)
    elif init_from is not None:
        load_weights(llm, encoder, Path(init_from))
        log.warning("starting from the weights in %s", init_from)
    llm.model.train(), encoder.train()
    deadline = time.monotonic() + minutes * 60
    t0 = time.monotonic()
    last = recipe.total_steps if stop_at_step is None else min(stop_at_step, recipe.total_steps)
    while step < last and time.monotonic() < deadline:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        items = batch_items("train", step * recipe.batch, recipe.batch, cfg, recipe.seed)
        loss, exact, aux_loss = forward_batch(llm, encoder, items, aux=aux)
        opt.zero_grad(set_to_none=True)
        (loss if aux_loss is None else loss + recipe.aux_weight * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            rate = (time.monotonic() - t0) / 20
            t0 = time.monotonic()
            log.warning("step %d loss %.4f%s batch-acc %.3f lr %.2e %.2f s/step", step, loss.item(),
                        "" if aux_loss is None else f" aux {aux_loss.item():.4f}", exact.float().mean().item(), lr_at(step, recipe), rate)
        if step % eval_every == 0 or step == recipe.total_steps:
            res = evaluate(llm, encoder, "validation", eval_n, cfg, recipe.seed)
            history.append({"step": step, **res})
            log.warning("step %d validation %s", step, json.dumps(res))
            _save_ckpt(ckpt, llm, encoder, aux, opt, step, history, recipe)
    _save_ckpt(ckpt, llm, encoder, aux, opt, step, history, recipe)
    return {"step": step, "history": history}


def _save_ckpt(path: Path, llm, encoder, aux, opt, step, history, recipe) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": llm.model.state_dict(), "encoder": encoder.state_dict(), "opt": opt.state_dict(), "step": step,
                "aux": None if aux is None else aux.state_dict(),
                "history": history, "rng": torch.get_rng_state(), "recipe": asdict(recipe)}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last checkpoint


def load_weights(llm, encoder, model_dir: Path) -> None:
    """Load an exported model's text and encoder weights into a freshly built pair (strict)."""
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from encoders.load import ST3D_WEIGHTS

    # transformers renames keys on save; its own loader maps them back.
    saved = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
    llm.model.load_state_dict(saved.state_dict())
    encoder.load_state_dict(load_file(str(model_dir / ST3D_WEIGHTS)))


def recipe_of(state: dict) -> DemoRecipe:
    """The recipe a checkpoint was trained with (fields it predates read as what it did without them)."""
    fields = {**_RECIPE_BEFORE_FIELD, **state["recipe"]}
    return DemoRecipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def export(out: Path, dest: Path) -> Path:
    """Write the trained model as a shippable directory (safetensors, configs, tokenizer, processor),
    built with the recipe stored in the run's checkpoint. A model card (README.md) already in `dest`
    is kept; everything else there is replaced."""
    ckpt = out / "ckpt.pt"
    if not ckpt.exists():
        raise BadRequest(f"train-demo --export: {ckpt} does not exist; train into {out} first")
    state = torch.load(ckpt, weights_only=False)
    recipe = recipe_of(state)
    llm, encoder = build_model(recipe, out / "model")
    llm.model.load_state_dict(state["model"]), encoder.load_state_dict(state["encoder"])
    card = (dest / "README.md").read_text() if (dest / "README.md").is_file() else None
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if card is not None:
        (dest / "README.md").write_text(card)
    llm.model.save_pretrained(dest)
    llm.processor.save_pretrained(dest)
    save_encoder(encoder, dest)
    (dest / "training.json").write_text(json.dumps({"recipe": asdict(recipe), "step": state["step"], "history": state["history"]}, indent=1) + "\n")
    return dest


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/demo", help="run directory (checkpoint, logs); a rerun resumes from it")
    p.add_argument("--minutes", type=float, default=120.0, help="stop after this much wall time (resume later)")
    p.add_argument("--steps", type=int, default=DemoRecipe.total_steps, help="total optimisation steps of the schedule")
    p.add_argument("--batch", type=int, default=DemoRecipe.batch)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=DemoRecipe.lr, help="peak learning rate (linear warm-up, cosine decay)")
    p.add_argument("--text-layers", type=int, default=DemoRecipe.text_layers, help="decoder layers of the text model")
    p.add_argument("--abs-pos", default=",".join(DemoRecipe.encoder_abs_pos), metavar="AXES",
                   help="encoder axes with absolute sin/cos coordinates, e.g. t,h,w ('' = RoPE only)")
    p.add_argument("--tokens-per-second", type=int, default=DemoRecipe.tokens_per_second,
                   help="M-RoPE temporal positions per second of video (2 = Qwen2.5-VL's)")
    p.add_argument("--aux-weight", type=float, default=DemoRecipe.aux_weight,
                   help="weight of the per-token auxiliary loss (what each token's cell holds, --aux-targets); 0 = off")
    p.add_argument("--aux-targets", default=",".join(DemoRecipe.aux_targets), metavar="NAMES",
                   help=f"per-token targets of the auxiliary heads, from {','.join(TARGET_CLASSES)}")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-n", type=int, default=140, help="validation items per evaluation (20 per family)")
    p.add_argument("--init-from", default=None, metavar="DIR", help="start a new run from an exported model's weights")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="only export the run's checkpoint to DIR (e.g. models/vidsieve-tiny), with the recipe it was trained with")


def run(args) -> int:
    axes = tuple(a for a in args.abs_pos.split(",") if a)
    targets = tuple(t for t in args.aux_targets.split(",") if t)
    unknown = sorted(set(targets) - set(TARGET_CLASSES))
    if unknown:
        raise BadRequest(f"train-demo: unknown --aux-targets {unknown}; known: {', '.join(TARGET_CLASSES)}")
    recipe = DemoRecipe(total_steps=args.steps, batch=args.batch, seed=args.seed, lr=args.lr, text_layers=args.text_layers,
                        encoder_abs_pos=axes, tokens_per_second=args.tokens_per_second, aux_weight=args.aux_weight,
                        aux_targets=targets)
    out = Path(args.out)
    if args.export:
        print(export(out, Path(args.export)))
        return 0
    logging.getLogger(__name__).setLevel(logging.WARNING)
    res = train(out, recipe, args.minutes, args.eval_every, args.eval_n, init_from=args.init_from)
    print(json.dumps({"step": res["step"], "last": res["history"][-1] if res["history"] else None}))
    return 0

"""The LLM stage: compressed `VisualTokens` into Qwen2.5-VL's language model at their M-RoPE positions.

    llm = QwenVL.load("path/to/Qwen2.5-VL-checkpoint")
    video = llm.preprocess(frames, time_s, sampled_fps)        # the checkpoint's own processor
    tokens = llm.encode(video)                                 # VisualTokens, full grid
    prefix = llm.prefill_video(compress(tokens, ...), video.second_per_grid)   # shared KV cache
    answer = llm.ask(prefix, "What happens?")                 # or llm.stream(prefix, ...) for text pieces

The prompt is the checkpoint's chat template with the video placeholder expanded to the *kept*
token count. Text ids are embedded with the model's own input embedding table, the kept tokens'
embeds are written into the video slots, and the language model (transformers' class) runs on
`inputs_embeds` plus 3-row position ids from `pipeline/positions.py`; the lm_head gives the logits.

One video, many questions: `prefill_video` runs everything up to and including the video once;
each question starts from a copy of that KV cache (safe to use from several threads). Query-aware
compression cannot share the prefix (the kept set depends on the question): call `prefill_video`
per question there.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from encoders.errors import VidsieveError
from encoders.tokens import VisualTokens
from pipeline.positions import POSITION_MODES, TEXT_AFTER_RULES, VideoSpan, generation_position_ids, prompt_position_ids
from pipeline.sampling import GenerationConfig, TextStream, next_token
from pipeline.weighting import ATTENTION_MODES, attention_mask, key_bias

log = logging.getLogger(__name__)


VISION_BACKENDS = ("vidsieve", "transformers")


class ModelLoadError(VidsieveError):
    """The model directory is missing, incomplete or not a supported checkpoint."""

    http_status = 500


@dataclass(frozen=True)
class VideoInput:
    """One video after the checkpoint's processor (resize, normalize, patchify).

    pixel_values: [T*Hp*Wp, C*temporal_patch*patch*patch] float, in the processor's patch order.
    grid_thw: (T, Hp, Wp) patch grid (Hp, Wp before the 2x2 merge).
    second_per_grid: seconds one tubelet spans (temporal_patch_size / sampled_fps).
    tubelet_time_s: [T] float32 timestamp of each tubelet's first frame.
    """

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    second_per_grid: float
    tubelet_time_s: torch.Tensor


@dataclass
class VideoPrefix:
    """The question-independent part of a prompt, prefilled: system turn, user turn start, video.

    cache: the language model's KV cache after the prefix (copied, never mutated, by questions).
    ids: [L0] prompt ids of the prefix (video slots hold the video token id).
    text_before: number of text tokens before the video; span: the video's kept tokens and grid.
    key_bias: [L0] float32 additive attention bias of the prefix's keys (log weight of each visual
    row, 0 for text) under proportional attention, or None (plain attention, or no row merged).
    """

    cache: object
    ids: list[int]
    text_before: int
    span: VideoSpan
    tokens: VisualTokens
    mode: str
    text_after: str
    prefix_text: str
    prefill_ms: float
    key_bias: torch.Tensor | None = None


@dataclass(frozen=True)
class Answer:
    """text: decoded answer without special tokens; token_ids: generated ids (a stop token included);
    prompt_ids: the full prompt (prefix + question); timings_ms: "question_prefill", "generate"."""

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    timings_ms: dict[str, float] = field(default_factory=dict)


def hf_vision_tower(model) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """transformers' own vision tower: (pixel_values, grid_thw [1, 3]) -> [T*H*W, D] merged tokens."""

    def run(pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        out = model.model.get_video_features(pixel_values, grid_thw, return_dict=True)
        return out.pooler_output[0]

    return run


class QwenVL:
    """A local Qwen2.5-VL checkpoint: processor, vision tower and language model."""

    def __init__(self, model, processor, model_dir: str = "", encoder=None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_dir = model_dir
        cfg = model.config
        self.tokens_per_second = cfg.vision_config.tokens_per_second
        self.temporal_patch_size = int(processor.video_processor.temporal_patch_size)
        self.merge_size = int(processor.video_processor.merge_size)
        self.video_token_id = int(cfg.video_token_id)
        self.video_token = processor.video_token
        self.forbidden_ids = {int(cfg.video_token_id), int(cfg.image_token_id), int(cfg.vision_start_token_id), int(cfg.vision_end_token_id)}
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = cfg.text_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        # vidsieve's own encoder (encoders/) when given; transformers' tower is the reference path.
        self.encoder = encoder
        self.vision_name = "vidsieve" if encoder is not None else "transformers"
        self._hf_vision = hf_vision_tower(model)

    # ---- loading ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        vision: str = "vidsieve",
        keep_hf_vision: bool = False,
    ) -> "QwenVL":
        """Load processor and model from a local directory (never the network).

        vision: "vidsieve" (encoders/ VisionEncoder: the directory's own `encoder_config.json` +
            `encoder.safetensors` when present, as the demo model ships, else built from the
            checkpoint's visual.* weights) or "transformers" (the model's own tower, the reference).
        keep_hf_vision: with vision="vidsieve", keep transformers' copy of the tower too (tests
            compare against `generate`); otherwise it is released so the weights sit in memory once.
        """
        from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

        from encoders.load import ST3D_CONFIG, load_encoder, load_qwen2_5_vl

        if vision not in VISION_BACKENDS:
            raise ValueError(f"vision must be one of {VISION_BACKENDS}, got {vision!r}")

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory {str(path)!r} has no config.json; pass --model DIR of a local Qwen2.5-VL checkpoint")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type != "qwen2_5_vl":
            raise ModelLoadError(f"model {str(path)!r} is a {config.model_type!r} checkpoint; vidsieve's LLM stage reads qwen2_5_vl")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True).to(device).eval()
        encoder = None
        if vision == "vidsieve" and (path / ST3D_CONFIG).is_file():
            # A vidsieve checkpoint (the demo model) ships its own encoder beside the HF files.
            encoder = load_encoder(path, dtype=dtype, device=device).eval()
            log.info("vidsieve %s encoder loaded from %s", encoder.config.family, path / ST3D_CONFIG)
        elif vision == "vidsieve":
            encoder, report = load_qwen2_5_vl(path, dtype=dtype, device=device)
            log.info("vidsieve vision encoder loaded from %s: %s", path, report)
            if not keep_hf_vision:
                # Our encoder holds the same weights; transformers' copy would only double the memory.
                model.model.visual = torch.nn.Module()
        return cls(model, processor, str(path), encoder=encoder)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- vision -------------------------------------------------------------------------------

    def preprocess(self, frames: np.ndarray, time_s, sampled_fps: float) -> VideoInput:
        """frames [F, H, W, 3] uint8 RGB (already sampled) -> the processor's patches.

        The processor is told not to sample (`do_sample_frames=False`) and is given the true
        sampling rate, which sets second_per_grid and hence the temporal positions.
        """
        from transformers.video_utils import VideoMetadata

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
        if not sampled_fps > 0:
            raise ValueError(f"sampled_fps must be > 0, got {sampled_fps}")
        f = frames.shape[0]
        meta = VideoMetadata(total_num_frames=f, fps=float(sampled_fps))
        out = self.processor.video_processor(
            videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt"
        )
        t, hp, wp = (int(x) for x in out["video_grid_thw"][0])
        times = torch.as_tensor(np.asarray(time_s, dtype=np.float64), dtype=torch.float32)
        if times.shape != (f,):
            raise ValueError(f"time_s must be [{f}], got {tuple(times.shape)}")
        return VideoInput(
            pixel_values=out["pixel_values_videos"],
            grid_thw=(t, hp, wp),
            second_per_grid=self.temporal_patch_size / float(sampled_fps),
            tubelet_time_s=times[:: self.temporal_patch_size][:t],
        )

    @torch.inference_mode()
    def encode(self, video: VideoInput, cell_mask: torch.Tensor | None = None) -> VisualTokens:
        """One video's tokens in raster (t, h, w) order: the full grid, or with `cell_mask`
        (bool [T, H, W] over merged cells, vidsieve encoder only) just the kept cells."""
        t, hp, wp = video.grid_thw
        if self.encoder is not None:
            grid = torch.tensor([[t, hp, wp]])
            masks = None if cell_mask is None else [cell_mask]
            return self.encoder.encode(video.pixel_values, grid, [video.tubelet_time_s], cell_mask=masks)
        if cell_mask is not None:
            raise ValueError("cell_mask needs vidsieve's encoder (vision='vidsieve'); transformers' tower encodes full grids")
        embeds = self._hf_vision(video.pixel_values.to(self.device), torch.tensor([[t, hp, wp]], device=self.device))
        llm_grid = (t, hp // self.merge_size, wp // self.merge_size)
        return VisualTokens.full_grid(embeds, llm_grid, video.tubelet_time_s)

    # ---- prompt -------------------------------------------------------------------------------

    def render(self, question: str) -> tuple[str, str]:
        """Chat template around one video and the question -> (text before the video, text after)."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        parts = text.split(self.video_token)
        if len(parts) != 2:
            raise VidsieveError(f"question must not contain the video placeholder {self.video_token!r}")
        return parts[0], parts[1]

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def question_embeds(self, question: str) -> torch.Tensor:
        """[Q, D] the question's token embeddings from the LLM's input table (for query-aware compression)."""
        return self._embed(self._tokenize(question))[0]

    def _embed(self, ids: list[int], visual: torch.Tensor | None = None) -> torch.Tensor:
        """[L] ids -> [1, L, D] embeddings; video slots take `visual` [N, D] rows in order."""
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        emb = self.model.get_input_embeddings()(ids_t)
        slots = ids_t == self.video_token_id
        n = int(slots.sum())
        if n != (0 if visual is None else visual.shape[0]):
            raise ValueError(f"prompt has {n} video slots for {0 if visual is None else visual.shape[0]} visual tokens")
        if n:
            emb = emb.clone()
            emb[slots] = visual.to(device=emb.device, dtype=emb.dtype)
        return emb.unsqueeze(0)

    @torch.inference_mode()
    def _forward(self, embeds: torch.Tensor, position_ids: torch.Tensor, cache, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        """[1, L, D] embeds, [3, L] int64 or float32 positions -> [V] float32 logits of the last position (cache updated).

        key_bias: None (transformers' own causal mask) or [K0] float32 bias of the first K0 keys of
        the whole sequence (proportional attention); keys past K0 get 0.
        """
        mask = None
        if key_bias is not None:
            past = cache.get_seq_length()
            mask = attention_mask(key_bias, past, embeds.shape[1], embeds.dtype).to(self.device)
        out = self.model.model.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids.to(self.device).unsqueeze(1),
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        return self.model.lm_head(out.last_hidden_state[:, -1]).float()[0]

    # ---- prefill + generate -------------------------------------------------------------------

    @torch.inference_mode()
    def prefill_video(
        self, tokens: VisualTokens, second_per_grid: float, mode: str = "keep", text_after: str = "spatial",
        attention: str = "proportional",
    ) -> VideoPrefix:
        """Prefill the prompt up to and including the video's tokens (in the order given).

        mode: a `pipeline.positions.POSITION_MODES` name; "centroid" places merged rows at the mean
        of their members' positions (float32 position ids), the others use int64 ids.
        attention: "proportional" (a row standing for w original tokens gets log(w) added to its
        attention logits, so it draws the attention its w originals drew; `pipeline/weighting.py`)
        or "plain". Equal when every weight is 1; then transformers' own causal mask is used.
        """
        from transformers import DynamicCache

        if tokens.num_videos != 1:
            raise ValueError(f"prefill_video takes one video's tokens, got a pack of {tokens.num_videos}")
        if mode not in POSITION_MODES or text_after not in TEXT_AFTER_RULES or attention not in ATTENTION_MODES:
            raise ValueError(f"mode must be in {POSITION_MODES}, text_after in {TEXT_AFTER_RULES} and attention in "
                             f"{ATTENTION_MODES}, got {mode!r}, {text_after!r}, {attention!r}")
        t0 = time.perf_counter()
        before, _ = self.render("")
        ids_before = self._tokenize(before)
        grid = tuple(int(g) for g in tokens.grids[0])
        members = tokens.members
        if members is not None:
            members = replace(members, pos=members.pos.cpu(), offsets=members.offsets.cpu())
        span = VideoSpan(pos=tokens.pos.cpu(), grid=grid, second_per_grid=float(second_per_grid), members=members)
        ids = ids_before + [self.video_token_id] * len(tokens)
        positions = prompt_position_ids([len(ids_before), span], self.tokens_per_second, mode, text_after)
        bias = key_bias(len(ids_before), tokens.weight) if attention == "proportional" else None
        if bias is not None:
            self._check_custom_mask()
        cache = DynamicCache(config=self.model.config.text_config)
        self._forward(self._embed(ids, tokens.embeds), positions.position_ids, cache, bias)
        return VideoPrefix(
            cache=cache,
            ids=ids,
            text_before=len(ids_before),
            span=span,
            tokens=tokens,
            mode=mode,
            text_after=text_after,
            prefix_text=before,
            prefill_ms=(time.perf_counter() - t0) * 1e3,
            key_bias=bias,
        )

    def _check_custom_mask(self) -> None:
        impl = getattr(self.model.config.text_config, "_attn_implementation", None) or "sdpa"
        if impl not in ("sdpa", "eager"):
            raise VidsieveError(f"proportional attention needs an additive attention mask, which the {impl!r} attention "
                                "implementation does not take; load the model with sdpa or eager attention, or ask with "
                                "attention='plain'")

    @torch.inference_mode()
    def _prefill_question(self, prefix: VideoPrefix, question: str):
        """Copy the prefix cache and run the question part -> (last logits [V], cache, next_position, suffix ids)."""
        if not question or not question.strip():
            raise VidsieveError("question is empty; ask something about the video")
        if self.forbidden_ids & set(self._tokenize(question)):
            raise VidsieveError("question must not contain vision placeholder tokens such as <|video_pad|>")
        before, after = self.render(question)
        if before != prefix.prefix_text:
            raise ValueError("the chat template puts question-dependent text before the video; prefix reuse is unsafe")
        suffix = self._tokenize(after)
        positions = prompt_position_ids(
            [prefix.text_before, prefix.span, len(suffix)], self.tokens_per_second, prefix.mode, prefix.text_after
        )
        cache = copy.deepcopy(prefix.cache)
        logits = self._forward(self._embed(suffix), positions.position_ids[:, len(prefix.ids) :], cache, prefix.key_bias)
        return logits, cache, positions.next_position, suffix

    @torch.inference_mode()
    def question_logits(self, prefix: VideoPrefix, question: str) -> torch.Tensor:
        """[V] float32 logits of the first answer token (for scoring choices without generating)."""
        return self._prefill_question(prefix, question)[0]

    def generate_ids(self, prefix: VideoPrefix, question: str, gen: GenerationConfig, timings: dict | None = None) -> Iterator[int]:
        """Yield generated token ids for `question` about the prefilled video (stop token included)."""
        # No `with inference_mode()` around the loop: it would stay on in the caller across yields.
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        logits, cache, next_position, _ = self._prefill_question(prefix, question)
        timings["question_prefill"] = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        rng = gen.generator(self.device)
        for k in range(gen.max_new_tokens):
            tok = next_token(logits, gen, rng)
            yield tok
            if tok in self.stop_ids or k + 1 == gen.max_new_tokens:
                break
            # A generated token is text, whatever its id: embed it as transformers' generate does, even a
            # vision placeholder id the model happened to produce (it is not a slot for visual tokens).
            with torch.inference_mode():
                embeds = self.model.get_input_embeddings()(torch.tensor([[tok]], device=self.device))
            logits = self._forward(embeds, generation_position_ids(next_position, 1, offset=k), cache, prefix.key_bias)
        timings["generate"] = (time.perf_counter() - t1) * 1e3

    def stream(self, prefix: VideoPrefix, question: str, gen: GenerationConfig | None = None) -> Iterator[str]:
        """Yield pieces of the answer's text as they are generated."""
        text = TextStream(self.tokenizer)
        for tok in self.generate_ids(prefix, question, gen or GenerationConfig()):
            piece = text.push(tok)
            if piece:
                yield piece
        rest = text.flush()
        if rest:
            yield rest

    def ask(self, prefix: VideoPrefix, question: str, gen: GenerationConfig | None = None) -> Answer:
        """Answer one question about the prefilled video."""
        timings: dict[str, float] = {}
        ids = list(self.generate_ids(prefix, question, gen or GenerationConfig(), timings))
        _, after = self.render(question)
        return Answer(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            token_ids=ids,
            prompt_ids=prefix.ids + self._tokenize(after),
            timings_ms=timings,
        )

    def ask_many(self, prefix: VideoPrefix, questions: list[str], gen: GenerationConfig | None = None) -> list[Answer]:
        """Several questions about one video; the video's prefill is shared, each starts from a copy."""
        return [self.ask(prefix, q, gen) for q in questions]

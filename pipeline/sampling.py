"""Next-token choice and incremental detokenization for the LLM stage (pure functions).

`GenerationConfig` holds the knobs; `next_token` picks one id from a row of logits (greedy when
temperature == 0, else temperature + nucleus sampling from a seeded `torch.Generator`, so a seed
reproduces an answer); `TextStream` turns a growing list of ids into printable text increments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from encoders.errors import BadRequest


@dataclass(frozen=True)
class GenerationConfig:
    """max_new_tokens: cap on generated tokens (the stop token counts); temperature 0 = greedy;
    top_p: nucleus mass kept when sampling; seed: makes sampling reproducible (None: nondeterministic)."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise BadRequest(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise BadRequest(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise BadRequest(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        if self.greedy:
            return None
        g = torch.Generator(device=device)
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(int(self.seed))
        return g


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """[V] float -> [V] with -inf outside the smallest set of tokens whose probability reaches top_p."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cum = torch.softmax(sorted_logits, -1).cumsum(-1)
    # Drop a token when the mass *before* it already reaches top_p (the top token always stays).
    drop_sorted = (cum - torch.softmax(sorted_logits, -1)) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> int:
    """[V] logits of the last position -> the chosen token id."""
    if config.greedy:
        return int(torch.argmax(logits))
    scaled = top_p_filter(logits.float() / config.temperature, config.top_p)
    probs = torch.softmax(scaled, -1)
    return int(torch.multinomial(probs, 1, generator=generator))


class TextStream:
    """Turns ids into text increments; holds back text that ends in an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        """Add one id; return the new printable text (possibly "")."""
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        if text.endswith("\ufffd") or not text.startswith(self.emitted):
            return ""
        new, self.emitted = text[len(self.emitted) :], text
        return new

    def flush(self) -> str:
        """Whatever is left (a trailing replacement character included) at the end of generation."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        new = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return new

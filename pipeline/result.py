"""The answer object: what `vidsieve ask --json` prints, `/v1/ask` returns and each batch line carries.

One builder, so the three stay identical. Keys are a contract (see issue 5's command-line section):
answer, output_token_ids, kept, stats{frames, grid, tokens_before, tokens_after, tokens_per_frame,
strategy, budget, timings_ms, ...}.
"""

from __future__ import annotations

from typing import Any

import torch

from encoders.tokens import VisualTokens

STAGES = ("decode", "select", "encode", "compress", "prefill", "generate")


def build_result(
    *,
    answer: str,
    output_token_ids: list[int],
    tokens: VisualTokens,
    frames: int,
    frame_times_s: list[float],
    sampled_fps: float,
    strategy: str,
    budget: str,
    position_mode: str,
    timings_ms: dict[str, float],
    model: str,
    signal_source: str | None = None,
    prompt_tokens: int | None = None,
    chunks: dict | None = None,
    dropped: str | None = None,
    attention: str | None = None,
) -> dict[str, Any]:
    """The answer dict for one question about one video.

    tokens: the compressed VisualTokens of this one video, in the order they entered the LLM.
    """
    if tokens.num_videos != 1:
        raise ValueError(f"build_result takes one video's tokens, got a pack of {tokens.num_videos}")
    grid = [int(x) for x in tokens.grids[0]]
    before = int(torch.tensor(grid).prod())
    after = len(tokens)
    return {
        "answer": answer,
        "output_token_ids": [int(i) for i in output_token_ids],
        "kept": tokens.pos.tolist(),
        "stats": {
            "frames": int(frames),
            "grid": grid,
            "tokens_before": before,
            "tokens_after": after,
            "tokens_per_frame": round(after / max(frames, 1), 4),
            "keep_ratio": round(after / max(before, 1), 4),
            "strategy": strategy,
            "budget": budget,
            "position_mode": position_mode,
            "dropped": dropped,
            "attention": attention,
            "weight_sum": int(tokens.weight.sum()),
            "sampled_fps": float(sampled_fps),
            "frame_times_s": [round(float(t), 6) for t in frame_times_s],
            "signal_source": signal_source,
            "prompt_tokens": prompt_tokens,
            "chunks": chunks,
            "model": model,
            "timings_ms": {k: round(float(v), 3) for k, v in timings_ms.items()},
        },
    }

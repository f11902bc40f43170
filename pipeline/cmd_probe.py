"""`vidsieve probe VIDEO`: decode a video and print its sampled frames, timestamps and codec signals.

Text output: one line about the video, one row per sampled frame (index, time, picture type,
keyframe, motion), then a small character map of each frame's motion. `--json` prints the same
as one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from pipeline.decode import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, SampledFrames, sample_frames

# Darkest to brightest; a cell's character is its motion as a fraction of the map's full scale.
_LEVELS = " .:-=+*#%@"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="path of the video file")
    parser.add_argument("--fps", type=float, default=None, help="sample this many frames per second (default 2)")
    parser.add_argument("--num-frames", type=int, default=None, help="sample this many evenly spaced frames instead")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, help="cap on sampled frames")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="cap on pixels per output frame")
    parser.add_argument("--backend", default="auto", help="decode backend: auto, decord or pyav")
    parser.add_argument("--cell-px", type=int, default=28, help="motion-map cell side in output pixels")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="decode timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    result = sample_frames(
        args.video,
        fps=args.fps,
        num_frames=args.num_frames,
        max_frames=args.max_frames,
        max_pixels=args.max_pixels,
        backend=args.backend,
        timeout_s=args.timeout,
        signals_cell_px=args.cell_px,
    )
    if args.json:
        print(json.dumps(to_json(args.video, result)))
    else:
        print("\n".join(describe(args.video, result)))
    return 0


def to_json(path: str, r: SampledFrames) -> dict:
    sig = r.signals
    return {
        "path": str(path),
        "codec": r.codec,
        "source_size": [r.source_width, r.source_height],
        "output_size": [int(r.frames.shape[2]), int(r.frames.shape[1])],
        "video_fps": r.video_fps,
        "duration_s": r.duration_s,
        "sampled_fps": r.sampled_fps,
        "backend": r.backend,
        "requested_frames": r.requested_frames,
        "notes": list(r.notes),
        "signal_source": sig.source if sig else None,
        "cell_px": sig.cell_px if sig else None,
        "frames": [
            {
                "index": int(r.indices[k]),
                "time_s": float(r.time_s[k]),
                "picture_type": sig.picture_types[k] if sig else None,
                "keyframe": bool(sig.keyframe[k]) if sig else None,
                "motion": np.round(sig.motion[k].astype(np.float64), 3).tolist() if sig else None,
            }
            for k in range(r.num_frames)
        ],
    }


def describe(path: str, r: SampledFrames) -> list[str]:
    """Human-readable lines: header, one row per frame, then the motion maps."""
    out_h, out_w = r.frames.shape[1:3]
    lines = [
        f"{path}: {r.codec} {r.source_width}x{r.source_height}, {r.video_fps:.3f} fps, {r.duration_s:.2f} s",
        f"sampled {r.num_frames} frames ({r.sampled_fps:.3f} fps) at {out_w}x{out_h} with {r.backend}",
    ]
    lines += [f"note: {n}" for n in r.notes]
    sig = r.signals
    if sig is None:
        lines += [f"  frame {int(i):6d}  t={t:8.3f}s" for i, t in zip(r.indices, r.time_s)]
        return lines
    unit = "mean |motion vector|, output px per frame" if sig.source == "mv" else "mean |difference| to previous sample, 0-255"
    lines.append(f"signals: {sig.source} ({unit}), {sig.motion.shape[1]}x{sig.motion.shape[2]} cells of {sig.cell_px} px")
    lines.append("  index    time_s  type  key   mean    max")
    for k in range(r.num_frames):
        m = sig.motion[k]
        key = "*" if sig.keyframe[k] else " "
        lines.append(f"  {int(r.indices[k]):5d}  {r.time_s[k]:8.3f}     {sig.picture_types[k]}    {key}  {m.mean():5.2f}  {m.max():5.2f}")
    full_scale = float(sig.motion.max()) or 1.0
    lines.append(f"motion maps (' ' = 0, '@' = {full_scale:.2f}):")
    maps = [(f"{int(r.indices[k])} {sig.picture_types[k]}", motion_rows(sig.motion[k], full_scale)) for k in range(r.num_frames)]
    lines += side_by_side(maps)
    return lines


def motion_rows(motion: np.ndarray, full_scale: float) -> list[str]:
    """[Hc, Wc] -> Hc strings of Wc characters from `_LEVELS` (any motion > 0 shows at least '.')."""
    level = np.ceil(np.clip(motion / full_scale, 0, 1) * (len(_LEVELS) - 1)).astype(int)
    return ["".join(_LEVELS[v] for v in row) for row in level]


def side_by_side(maps: list[tuple[str, list[str]]], width: int = 100) -> list[str]:
    """Lay (title, rows) maps out left to right in bands no wider than `width` characters."""
    if not maps:
        return []
    cell_w = max(max(len(t) for t, _ in maps), len(maps[0][1][0]) + 2) + 2
    per_band = max(1, width // cell_w)
    lines = []
    for lo in range(0, len(maps), per_band):
        band = maps[lo : lo + per_band]
        lines.append("".join(t.ljust(cell_w) for t, _ in band).rstrip())
        for j in range(len(band[0][1])):
            lines.append("".join(("|" + rows[j] + "|").ljust(cell_w) for _, rows in band).rstrip())
    return lines

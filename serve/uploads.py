"""Getting a video onto local disk safely: a body-size limit, per-request temp dirs, and a content probe.

- `BodySizeLimit`: ASGI middleware answering 413 as soon as a request body passes the limit (from
  Content-Length or while the bytes arrive), before the multipart parser spools it anywhere.
- `request_workdir`: a fresh directory per request, removed when the request ends, also on error.
- `save_upload`: copy an upload to disk in chunks under the file limit (413).
- `probe_video`: open the file with PyAV and decode one frame: what the bytes are, not what the name says
  (415 not a video / no video stream, 422 corrupt, truncated or past a duration/pixel limit).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
from fastapi import Request, UploadFile

from pipeline.errors import UnsupportedVideo, VideoDecodeError, VideoLimitExceeded
from serve.errors import UploadTooLarge, error_body

CHUNK_BYTES = 1024 * 1024
# Multipart framing and the small form fields ride on top of the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024

# Leading bytes of containers we recognise: a file starting with one is a video that failed to open
# (truncated, corrupt: 422), anything else is not a video at all (415).
_MAGIC = (
    (4, b"ftyp"),  # ISO BMFF: mp4, mov, m4v
    (0, b"\x1a\x45\xdf\xa3"),  # EBML: mkv, webm
    (0, b"RIFF"),  # avi
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"FLV"),
)


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with a 413 JSON error."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)

        state = {"received": 0, "exceeded": False, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            if state["exceeded"]:
                return  # whatever the app answers after the overflow is replaced by the 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except BaseException:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._refuse(send)

    async def _refuse(self, send):
        mib = self.max_bytes / (1024 * 1024)
        body = json.dumps(error_body(413, f"request body is larger than the server's limit of {mib:.1f} MiB")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


def make_workdir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="req-", dir=root))


def request_workdir(request: Request) -> Iterator[Path]:
    """FastAPI dependency: a private directory for this request's files, removed when the request ends."""
    workdir = make_workdir(request.app.state.uploads_root)
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def safe_suffix(filename: str | None) -> str:
    """A harmless suffix for the saved copy (helps nothing but humans reading the temp dir)."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ".bin"


async def save_upload(upload: UploadFile, dest: Path, max_bytes: int) -> Path:
    """Copy `upload` to `dest` chunk by chunk; 413 as soon as it passes `max_bytes` (the partial file is removed)."""
    written = 0
    try:
        with open(dest, "wb") as out:
            while chunk := await upload.read(CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLarge(
                        f"upload {upload.filename!r} is larger than the limit of {max_bytes / (1024 * 1024):.1f} MiB"
                    )
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


@dataclass(frozen=True)
class VideoInfo:
    """What the probe saw: container and codec names, frame size, duration (None when unknown)."""

    container: str
    codec: str
    width: int
    height: int
    duration_s: float | None
    size_bytes: int


def probe_video(path: Path, name: str, *, max_duration_s: float, max_pixels: int) -> VideoInfo:
    """Check that `path` holds a decodable video within limits; `name` is what messages call it.

    Raises UnsupportedVideo (415) for non-video bytes or a file without a video stream,
    VideoDecodeError (422) for empty, truncated or corrupt videos, VideoLimitExceeded (422) past a limit.
    """
    size = os.path.getsize(path)
    if size == 0:
        raise VideoDecodeError(f"{name} is empty (0 bytes); send a video file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        if _looks_like_video_container(path):
            raise VideoDecodeError(f"{name} looks like a video container but cannot be opened (truncated or corrupt?): {_ff(e)}") from None
        raise UnsupportedVideo(f"{name} is not a video file vidsieve can read ({_ff(e)}); send e.g. MP4, MKV or WebM") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise UnsupportedVideo(f"{name} has no video stream (it holds {', '.join(kinds)}); send a file with video")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width * height > max_pixels:
            raise VideoLimitExceeded(f"{name} frames are {width}x{height}, more than the server's limit of {max_pixels} pixels")
        duration_s = _duration_s(container, stream)
        if duration_s is not None and duration_s > max_duration_s:
            raise VideoLimitExceeded(f"{name} lasts {duration_s:.1f} s, longer than the server's limit of {max_duration_s:g} s")
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as e:
            raise VideoDecodeError(f"{name} has a video stream that cannot be decoded (corrupt or truncated?): {_ff(e)}") from None
        if first is None:
            raise VideoDecodeError(f"{name} has a video stream with no decodable frames (truncated?)")
        return VideoInfo(container.format.name, stream.codec_context.name, first.width, first.height, duration_s, size)


def _duration_s(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _looks_like_video_container(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[off : off + len(magic)] == magic for off, magic in _MAGIC)


def _ff(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)

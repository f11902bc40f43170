"""Turning a video reference from a request into a local file, safely.

Accepted: `data:video/...;base64,...` URLs (written to the request's temp dir), uploaded-file ids
(`file-...`, see files.py), `file://` paths that resolve (symlinks included) inside `--allowed-media-dir`,
and `http(s)://` URLs only when the server was started with `--allow-remote-urls`.
"""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from encoders.errors import BadRequest
from serve.errors import Forbidden, NotFound, UploadTooLarge
from serve.files import ID_PREFIX

REMOTE_TIMEOUT_S = 30


async def resolve_video(request: Request, url: str, workdir: Path) -> tuple[Path, str]:
    """Local path of the video `url` names, and the name error messages should call it."""
    settings = request.app.state.settings
    if url.startswith("data:"):
        return _write_data_url(url, workdir / "video.bin", settings.max_upload_bytes), "the data: URL video"
    if url.startswith(ID_PREFIX):
        stored = request.app.state.files.get(url)
        return stored.path, f"file {url} ({stored.filename})"
    if url.startswith("file://"):
        return _allowed_local_path(url, settings.allowed_media_dir), url
    if url.startswith(("http://", "https://")):
        if not settings.allow_remote_urls:
            raise Forbidden("http(s) video URLs are disabled on this server; upload the file (POST /v1/files) or send a data: URL")
        dest = workdir / "remote.bin"
        await run_in_threadpool(_download, url, dest, settings.max_upload_bytes)
        return dest, url
    raise BadRequest(f"video_url.url must be a data: URL, a file id ({ID_PREFIX}...), a file:// path or http(s) URL; got {url[:60]!r}")


def _write_data_url(url: str, dest: Path, max_bytes: int) -> Path:
    header, comma, payload = url[5:].partition(",")
    if not comma or ";base64" not in header:
        raise BadRequest("video data: URL must look like data:video/mp4;base64,<bytes>")
    # base64 carries 3 bytes per 4 characters: refuse before decoding anything that is too big.
    if len(payload) * 3 // 4 > max_bytes:
        raise UploadTooLarge(f"video in the data: URL is larger than the limit of {max_bytes / 2**20:.1f} MiB")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("video data: URL is not valid base64") from None
    dest.write_bytes(data)
    return dest


def _allowed_local_path(url: str, allowed_dir: Path | None) -> Path:
    if allowed_dir is None:
        raise Forbidden("file:// video URLs are disabled; start the server with --allowed-media-dir DIR to allow files under DIR")
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise BadRequest(f"file:// URL names host {parsed.netloc!r}; use file:///absolute/path")
    # Resolve symlinks and '..' first, then check containment: a link inside the dir pointing out is refused.
    path = Path(urllib.parse.unquote(parsed.path)).resolve()
    if not path.is_relative_to(allowed_dir):
        raise Forbidden(f"{url} is outside the allowed media directory")
    if not path.is_file():
        raise NotFound(f"{url} does not exist in the allowed media directory")
    return path


def _download(url: str, dest: Path, max_bytes: int) -> None:
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT_S) as response, open(dest, "wb") as out:
            while chunk := response.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLarge(f"{url} is larger than the limit of {max_bytes / 2**20:.1f} MiB")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        dest.unlink(missing_ok=True)
        raise BadRequest(f"could not fetch {url}: {e}") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise

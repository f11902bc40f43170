"""`/v1/files` storage: uploaded videos kept under a server directory so one upload serves many questions.

Bounded three ways: a count cap, a byte cap and an expiry. Expired files are swept on every access;
when the store is still full a new upload is refused (507) rather than evicting someone's live file.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serve.errors import NotFound, StoreFull

ID_PREFIX = "file-"


@dataclass(frozen=True)
class StoredFile:
    id: str
    path: Path
    filename: str
    bytes: int
    created_at: float
    expires_at: float


class FileStore:
    """Thread-safe map of id -> stored video; files live in `root`."""

    def __init__(self, root: Path, *, max_files: int, max_bytes: int, ttl_s: float, clock=time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_files, self.max_bytes, self.ttl_s = max_files, max_bytes, ttl_s
        self._clock = clock
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def add(self, src: Path, filename: str) -> StoredFile:
        """Move `src` into the store (507 when the count or byte cap would be passed)."""
        size = src.stat().st_size
        with self._lock:
            self._sweep()
            used = sum(f.bytes for f in self._files.values())
            if len(self._files) >= self.max_files or used + size > self.max_bytes:
                raise StoreFull(
                    f"file store is full ({len(self._files)}/{self.max_files} files, "
                    f"{used / 2**20:.1f}/{self.max_bytes / 2**20:.1f} MiB); "
                    "delete files with DELETE /v1/files/{id} or wait for them to expire"
                )
            file_id = ID_PREFIX + secrets.token_hex(12)
            dest = self.root / (file_id + src.suffix)
            shutil.move(str(src), dest)
            now = self._clock()
            stored = StoredFile(file_id, dest, filename, size, now, now + self.ttl_s)
            self._files[file_id] = stored
            return stored

    def get(self, file_id: str) -> StoredFile:
        with self._lock:
            self._sweep()
            stored = self._files.get(file_id)
        if stored is None:
            raise NotFound(f"no file with id {file_id!r} (unknown or expired); upload it again with POST /v1/files")
        return stored

    def delete(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.pop(file_id, None)
        if stored is None:
            raise NotFound(f"no file with id {file_id!r} (unknown or expired)")
        stored.path.unlink(missing_ok=True)
        return stored

    def list(self) -> list[StoredFile]:
        with self._lock:
            self._sweep()
            return sorted(self._files.values(), key=lambda f: f.created_at)

    def clear(self) -> None:
        with self._lock:
            for stored in self._files.values():
                stored.path.unlink(missing_ok=True)
            self._files.clear()

    def _sweep(self) -> None:
        # Callers hold the lock. A file being read by a running request may vanish here; that request
        # then fails with the decode error naming the file, which is the honest outcome of an expiry.
        now = self._clock()
        for file_id in [k for k, f in self._files.items() if f.expires_at <= now]:
            self._files.pop(file_id).path.unlink(missing_ok=True)

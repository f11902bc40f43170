"""Shared request dependencies and helpers, written once: API key, engine readiness, options + limits,
and the one function that runs a question through the queue."""

from __future__ import annotations

import hmac
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from encoders.errors import BadRequest
from pipeline.options import AskOptions
from serve.errors import NotReady, Unauthorized
from serve.uploads import VideoInfo, probe_video, request_workdir


@dataclass
class EngineSlot:
    """The engine and its loading state (the model may load in the background while /healthz answers)."""

    engine: Any = None
    status: str = "loading"  # loading | ready | failed
    detail: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_ready(self, engine) -> None:
        self.engine, self.status, self.detail = engine, "ready", None

    def set_failed(self, detail: str) -> None:
        self.status, self.detail = "failed", detail


def require_api_key(request: Request) -> None:
    """401 unless the request carries `Authorization: Bearer <key>` (or `X-API-Key`) when a key is set."""
    key = request.app.state.settings.api_key
    if not key:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    if not given or not hmac.compare_digest(given.encode(), key.encode()):
        raise Unauthorized("missing or wrong API key; send 'Authorization: Bearer <key>'")


def get_engine(request: Request):
    slot: EngineSlot = request.app.state.engine_slot
    if slot.status == "ready":
        return slot.engine
    if slot.status == "failed":
        raise NotReady(f"the model failed to load: {slot.detail}", retry_after_s=60)
    raise NotReady("the model is still loading; retry shortly (GET /readyz says when it is ready)")


# Route parameter types: this request's temp dir (removed when it ends) and the loaded engine (503 until then).
Workdir = Annotated[Path, Depends(request_workdir)]
Engine = Annotated[Any, Depends(get_engine)]


def build_options(request: Request, values: dict) -> AskOptions:
    """AskOptions from request values (None = default), then the server's own limits (422 past them)."""
    options = AskOptions.from_dict(values)
    settings = request.app.state.settings
    if options.max_frames > settings.max_frames:
        raise BadRequest(f"max_frames must be at most {settings.max_frames} on this server, got {options.max_frames}")
    if options.max_new_tokens > settings.max_new_tokens:
        raise BadRequest(f"max_new_tokens must be at most {settings.max_new_tokens} on this server, got {options.max_new_tokens}")
    return options


async def probe(request: Request, path: Path, name: str) -> VideoInfo:
    """Check the file is a video within the server's limits (off the event loop: it decodes a frame)."""
    s = request.app.state.settings
    return await run_in_threadpool(probe_video, path, name, max_duration_s=s.max_duration_s, max_pixels=s.max_pixels)


async def ask(request: Request, engine, video: Path, question: str, options: AskOptions) -> dict:
    """One question about one video, computed on a worker; the answer dict."""
    result = await request.app.state.queue.run(lambda: engine.ask(str(video), question, options), gone=request.is_disconnected)
    request.app.state.metrics.observe_answer(result)
    return result


def ask_stream(request: Request, engine, video: Path, question: str, options: AskOptions) -> AsyncIterator[dict]:
    """Like `ask`, yielding {"delta": text} items and then {"result": answer dict}; admitted (or 429) now."""
    items = request.app.state.queue.stream(lambda: engine.ask_stream(str(video), question, options))
    return _observed(request, items)


async def _observed(request: Request, items: AsyncIterator[dict]) -> AsyncIterator[dict]:
    async for item in items:
        if "result" in item:
            request.app.state.metrics.observe_answer(item["result"])
        yield item


def check_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise BadRequest("question is empty; ask something about the video")
    return question

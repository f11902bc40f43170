"""POST /v1/chat/completions, OpenAI-compatible.

One user message carries one video (a `video_url` part or a `file` part) and the question (its text parts).
vidsieve's own options ride in the extra body field `vidsieve` (pipeline AskOptions keys). `stream: true`
answers with server-sent events in OpenAI's chunk format, ending with `data: [DONE]`; the last content
chunk carries the full answer object under `vidsieve` so a page can draw the accounting.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from encoders.errors import BadRequest
from serve import deps
from serve.errors import NotFound, error_body, message_of, status_of
from serve.media import resolve_video
from serve.deps import Engine, Workdir
from serve.files import ID_PREFIX
from serve.schemas import (ChatCompletion, ChatCompletionRequest, FilePart, ModelCard, ModelList, TextPart, VideoUrlPart,
                           error_responses)

log = logging.getLogger("vidsieve.serve")

router = APIRouter(prefix="/v1", dependencies=[Depends(deps.require_api_key)])

_STREAM_DOC = {"content": {"text/event-stream": {"schema": {"type": "string"}, "description": "with stream: true"}}}


@router.post("/chat/completions", response_model=ChatCompletion, summary="OpenAI-compatible chat completion about a video",
             responses={200: _STREAM_DOC, **error_responses(401, 403, 404, 413, 415, 422, 429, 500, 503, 504)})
async def chat_completions(body: ChatCompletionRequest, request: Request, workdir: Workdir, engine: Engine):
    _check_model(body.model, engine)
    url, question = parse_messages(body)
    options = deps.build_options(request, request_options(body))
    path, name = await resolve_video(request, url, workdir)
    if not url.startswith(ID_PREFIX):  # stored files were probed when uploaded
        await deps.probe(request, path, name)
    meta = _Meta(engine.model_name, options.max_new_tokens)
    if body.stream:
        items = deps.ask_stream(request, engine, path, question, options)  # 429 raised here, before any byte is sent
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(items, meta, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return completion(await deps.ask(request, engine, path, question, options), meta)


@router.get("/models", response_model=ModelList, summary="The one model this server serves (OpenAI-compatible)",
            responses=error_responses(401, 503))
async def list_models(engine: Engine):
    return ModelList(data=[ModelCard(id=engine.model_name)])


def parse_messages(body: ChatCompletionRequest) -> tuple[str, str]:
    """(video reference, question) from the messages; 422 for anything vidsieve cannot answer faithfully."""
    roles = [m.role for m in body.messages]
    if roles != ["user"]:
        # The engine answers one question about one video; silently dropping a system prompt or earlier turns
        # would answer a different question than the one asked.
        raise BadRequest(f"messages must be exactly one user message (with the video and the question); got roles {roles}")
    content = body.messages[0].content
    parts = [TextPart(type="text", text=content)] if isinstance(content, str) else content
    videos = [p.video_url.url if isinstance(p, VideoUrlPart) else p.file.file_id
              for p in parts if isinstance(p, (VideoUrlPart, FilePart))]
    if len(videos) != 1:
        raise BadRequest(f"the user message must hold exactly one video (a video_url or file part); got {len(videos)}")
    question = "\n".join(p.text for p in parts if isinstance(p, TextPart)).strip()
    if not question:
        raise BadRequest("the user message has no question text; add a text part")
    return videos[0], question


def request_options(body: ChatCompletionRequest) -> dict:
    """AskOptions values: the `vidsieve` field plus OpenAI's own sampling fields (both at once: 422)."""
    values = body.vidsieve.model_dump(exclude_none=True) if body.vidsieve else {}
    max_tokens = {body.max_tokens, body.max_completion_tokens} - {None}
    if len(max_tokens) > 1:
        raise BadRequest("max_tokens and max_completion_tokens disagree; send one")
    top = {"max_new_tokens": max_tokens.pop() if max_tokens else None,
           "temperature": body.temperature, "top_p": body.top_p, "seed": body.seed}
    for key, value in top.items():
        if value is None:
            continue
        if key in values and values[key] != value:
            raise BadRequest(f"{key} is set both at the top level and in `vidsieve` with different values; send one")
        values[key] = value
    return values


class _Meta:
    def __init__(self, model: str, max_new_tokens: int):
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.max_new_tokens = max_new_tokens


def completion(result: dict, meta: _Meta) -> dict:
    return {
        "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["answer"]},
                     "finish_reason": finish_reason(result, meta.max_new_tokens)}],
        "usage": usage(result),
        "vidsieve": result,
    }


def usage(result: dict) -> dict:
    stats = result["stats"]
    completion_tokens = len(result["output_token_ids"])
    # The engine reports the prompt length when it knows it; otherwise the visual tokens are the floor.
    prompt_tokens = int(stats.get("prompt_tokens", stats["tokens_after"]))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "visual_tokens_before": stats["tokens_before"], "visual_tokens_after": stats["tokens_after"]}


def finish_reason(result: dict, max_new_tokens: int) -> str:
    return "length" if len(result["output_token_ids"]) >= max_new_tokens else "stop"


async def _sse(items: AsyncIterator[dict], meta: _Meta, include_usage: bool) -> AsyncIterator[str]:
    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {"id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for item in items:
            if "delta" in item:
                if item["delta"]:
                    yield chunk({"content": item["delta"]})
                continue
            result = item["result"]
            yield chunk({}, finish_reason(result, meta.max_new_tokens), vidsieve=result)
            if include_usage:
                yield "data: " + json.dumps({"id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                                             "model": meta.model, "choices": [], "usage": usage(result)}) + "\n\n"
    except Exception as e:  # noqa: BLE001 - headers are gone: the error travels as an event
        if status_of(e) == 500:
            log.exception("error while streaming %s", meta.id)
        yield f"data: {json.dumps(error_body(status_of(e), message_of(e)))}\n\n"
    yield "data: [DONE]\n\n"


def _check_model(model: str | None, engine) -> None:
    if model in (None, "", "vidsieve", "default", engine.model_name):
        return
    raise NotFound(f"model {model!r} is not served here; this server serves {engine.model_name!r} (or omit `model`)")


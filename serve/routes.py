"""Routes: /v1/ask, /v1/files, health, metrics and the web page. Each a few lines over deps.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from encoders.errors import BadRequest
from serve import deps
from serve.errors import NotReady
from serve.files import StoredFile
from serve.schemas import AskResponse, FileDeleted, FileList, FileObject, Health, Ready, error_responses
from serve.uploads import safe_suffix, save_upload

STATIC_DIR = Path(__file__).parent / "static"

api = APIRouter(prefix="/v1", dependencies=[Depends(deps.require_api_key)])
public = APIRouter()

Workdir, Engine = deps.Workdir, deps.Engine


class AskForm(BaseModel):
    """/v1/ask form fields besides the video."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="the question about the video", max_length=20_000)
    video: UploadFile | None = Field(None, description="the video file (or give file_id)")
    file_id: str | None = Field(None, description="an id from POST /v1/files, instead of uploading `video`")
    strategy: str | None = Field(None, description="compression strategy ('none', 'codec', 'codec+tome', ...)", max_length=200)
    keep_ratio: float | None = Field(None, description="fraction of visual tokens to keep, in (0, 1]")
    tokens_per_frame: float | None = Field(None, description="visual tokens to keep per sampled frame")
    fps: float | None = Field(None, description="frames sampled per second (default 2)")
    max_frames: int | None = Field(None, description="cap on sampled frames")
    max_new_tokens: int | None = Field(None, description="cap on generated tokens")
    dropped: str | None = Field(None, description="tokens a strategy drops: 'absorb' (default; counted on the most similar kept token) or 'drop'", max_length=16)
    attention: str | None = Field(None, description="'proportional' (default; a token standing for w originals draws the attention of w) or 'plain'", max_length=16)


# FastAPI documents a form model as urlencoded only; it is multipart when it carries the video (both are accepted).
_MULTIPART_ASK = {"requestBody": {"content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/AskForm"}}}}}


@api.post("/ask", response_model=AskResponse, summary="Ask a question about a video", openapi_extra=_MULTIPART_ASK,
          responses=error_responses(401, 404, 413, 415, 422, 429, 500, 503, 504))
async def ask(request: Request, form: Annotated[AskForm, Form()], workdir: Workdir, engine: Engine):
    options = deps.build_options(request, form.model_dump(exclude={"question", "file_id", "video"}, exclude_none=True))
    path = await _video_from_form(request, form.video, form.file_id, workdir)
    return await deps.ask(request, engine, path, deps.check_question(form.question), options)


@api.post("/files", response_model=FileObject, summary="Upload a video once, ask about it many times",
          responses=error_responses(401, 413, 415, 422, 507))
async def upload_file(request: Request, workdir: Workdir,
                      file: Annotated[UploadFile, File(description="the video file")],
                      purpose: Annotated[str | None, Form(description="accepted for OpenAI compatibility", max_length=64)] = None):
    path = await _saved_upload(request, file, workdir)
    return _file_object(request.app.state.files.add(path, file.filename or path.name))


@api.get("/files", response_model=FileList, summary="List uploaded videos", responses=error_responses(401))
async def list_files(request: Request):
    return FileList(data=[_file_object(f) for f in request.app.state.files.list()])


@api.get("/files/{file_id}", response_model=FileObject, summary="Describe an uploaded video", responses=error_responses(401, 404))
async def get_file(request: Request, file_id: str):
    return _file_object(request.app.state.files.get(file_id))


@api.delete("/files/{file_id}", response_model=FileDeleted, summary="Delete an uploaded video", responses=error_responses(401, 404))
async def delete_file(request: Request, file_id: str):
    return FileDeleted(id=request.app.state.files.delete(file_id).id)


@public.get("/healthz", response_model=Health, summary="The process answers")
async def healthz():
    return Health(status="ok")


@public.get("/readyz", response_model=Ready, summary="The model is loaded", responses=error_responses(503))
async def readyz(request: Request):
    slot: deps.EngineSlot = request.app.state.engine_slot
    if slot.status != "ready":
        raise NotReady(f"model {slot.status}" + (f": {slot.detail}" if slot.detail else ""))
    return Ready(status="ready", model=getattr(slot.engine, "model_name", None))


@public.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request):
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


@public.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC_DIR / "index.html")


async def _video_from_form(request: Request, video: UploadFile | None, file_id: str | None, workdir: Path) -> Path:
    if (video is None) == (file_id is None):
        raise BadRequest("send exactly one of the `video` file and `file_id`")
    if file_id is not None:
        return request.app.state.files.get(file_id).path
    return await _saved_upload(request, video, workdir)


async def _saved_upload(request: Request, upload: UploadFile, workdir: Path) -> Path:
    """The upload on disk under the size limit, probed: a video within limits, or 413/415/422."""
    dest = workdir / ("upload" + safe_suffix(upload.filename))
    await save_upload(upload, dest, request.app.state.settings.max_upload_bytes)
    await deps.probe(request, dest, f"upload {upload.filename!r}")
    return dest


def _file_object(f: StoredFile) -> FileObject:
    return FileObject(id=f.id, bytes=f.bytes, created_at=int(f.created_at), expires_at=int(f.expires_at), filename=f.filename)

"""Request and response schemas: what /docs shows, and what responses are checked against."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

# ---------------------------------------------------------------- errors and health


class ErrorDetail(BaseModel):
    message: str = Field(description="one sentence: what is wrong and, when useful, the fix")
    type: str = Field(description="error class, OpenAI-style (invalid_request_error, rate_limit_error, ...)")
    code: int = Field(description="the HTTP status")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# Any route can answer these: malformed request (400), failed validation (422), a bug (500).
_ALWAYS = (400, 422, 500)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entry documenting the JSON error body under each status (plus 400, 422, 500)."""
    return {code: {"model": ErrorResponse, "description": "error"} for code in sorted({*codes, *_ALWAYS})}


class Health(BaseModel):
    status: Literal["ok"] = Field(description="the process is up and its event loop answers")


class Ready(BaseModel):
    status: Literal["ready", "loading", "failed"] = Field(description="whether the model is loaded")
    model: str | None = Field(description="the loaded model's name")
    detail: str | None = Field(None, description="why the model is not ready")


# ---------------------------------------------------------------- options


class AskOptionsBody(BaseModel):
    """Per-request compression and sampling options (pipeline/options.py `AskOptions`); omitted = default."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(None, description="compression strategy, e.g. 'none', 'codec', 'codec+tome'", max_length=200)
    keep_ratio: float | None = Field(None, description="fraction of visual tokens to keep, in (0, 1]")
    tokens_per_frame: float | None = Field(None, description="visual tokens to keep per sampled frame (instead of keep_ratio)")
    fps: float | None = Field(None, description="frames sampled per second (default 2)")
    num_frames: int | None = Field(None, description="sample this many evenly spaced frames instead of fps")
    max_frames: int | None = Field(None, description="cap on sampled frames")
    max_new_tokens: int | None = Field(None, description="cap on generated tokens")
    temperature: float | None = Field(None, description="0 = greedy")
    top_p: float | None = Field(None, description="nucleus sampling mass")
    seed: int | None = Field(None, description="sampling seed")
    codec_placement: str | None = Field(None, description="for strategies starting with 'codec': 'after' the encoder (default) or 'before' it (only chosen cells are encoded)", max_length=16)
    chunk_frames: int | None = Field(None, description="process the video in runs of this many sampled frames (even; bounded memory for long videos)")
    position_mode: str | None = Field(None, description="'keep' (original positions), 'compact' (renumbered) or 'centroid' (merged tokens at their members' mean position)", max_length=32)
    dropped: str | None = Field(None, description="tokens a strategy drops: 'absorb' (default; counted in the weight of the most similar kept token) or 'drop'", max_length=16)
    attention: str | None = Field(None, description="'proportional' (default; a token standing for w originals draws the attention of w) or 'plain'", max_length=16)


# ---------------------------------------------------------------- the answer


class Timings(BaseModel):
    model_config = ConfigDict(extra="allow")

    decode: float | None = Field(None, description="ms decoding and sampling frames")
    select: float | None = Field(None, description="ms choosing patches before the encoder")
    encode: float | None = Field(None, description="ms in the vision encoder")
    compress: float | None = Field(None, description="ms compressing visual tokens")
    prefill: float | None = Field(None, description="ms LLM prefill")
    generate: float | None = Field(None, description="ms generating the answer")
    total: float | None = Field(None, description="ms end to end")


class AskStats(BaseModel):
    model_config = ConfigDict(extra="allow")

    frames: int = Field(description="frames sampled")
    grid: list[int] = Field(description="[T, H, W]: the uncompressed LLM grid (T tubelets of 2 frames, H x W 28-px cells)")
    tokens_before: int = Field(description="visual tokens before compression (T*H*W)")
    tokens_after: int = Field(description="visual tokens sent to the LLM")
    tokens_per_frame: float = Field(description="tokens_after / frames")
    keep_ratio: float = Field(description="tokens_after / tokens_before")
    strategy: str = Field(description="compression strategy used")
    budget: str = Field(description="the budget asked for ('all', 'keep_ratio=0.25', ...)")
    position_mode: str = Field(description="how kept tokens were positioned")
    dropped: str | None = Field(None, description="what happened to dropped tokens: 'absorb' or 'drop'")
    attention: str | None = Field(None, description="'proportional' or 'plain' attention to weighted tokens")
    weight_sum: int | None = Field(None, description="original tokens the visual tokens sent stand for (= tokens_before when nothing was lost)")
    sampled_fps: float = Field(description="sampling rate used")
    frame_times_s: list[float] = Field(description="timestamp of each sampled frame, seconds")
    signal_source: str | None = Field(None, description="where codec signals came from, if used")
    prompt_tokens: int | None = Field(None, description="tokens the LLM read: text plus the visual tokens kept")
    model: str = Field(description="model name")
    timings_ms: Timings = Field(description="per-stage wall time, milliseconds")


class AskResponse(BaseModel):
    """The same object `vidsieve ask --json` prints."""

    model_config = ConfigDict(extra="allow")

    answer: str = Field(description="the generated answer text")
    output_token_ids: list[int] = Field(description="generated token ids")
    kept: list[list[int]] = Field(description="[t, h, w] of every visual token sent to the LLM (LLM grid)")
    stats: AskStats


# ---------------------------------------------------------------- files


class FileObject(BaseModel):
    id: str = Field(description="use as video_url.url in chat completions, or file_id in /v1/ask")
    object: Literal["file"] = "file"
    bytes: int = Field(description="size in bytes")
    created_at: int = Field(description="unix seconds")
    expires_at: int = Field(description="unix seconds after which the file is deleted")
    filename: str = Field(description="the uploaded file's name")
    purpose: Literal["video"] = "video"


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# ---------------------------------------------------------------- chat completions (OpenAI-compatible)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=20_000)


class VideoUrl(BaseModel):
    url: str = Field(description="data:video/...;base64,..., an uploaded file id (file-...), file:///path in the "
                                 "allowed media dir, or http(s):// when the server allows remote URLs")


class VideoUrlPart(BaseModel):
    type: Literal["video_url"]
    video_url: VideoUrl


class FileRef(BaseModel):
    file_id: str = Field(description="an id from POST /v1/files")


class FilePart(BaseModel):
    type: Literal["file"]
    file: FileRef


ContentPart = Annotated[Union[TextPart, VideoUrlPart, FilePart], Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] = Field(description="text, or a list of text / video_url / file parts")


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="send a last chunk with usage before [DONE]")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="ignored beyond a check: the server serves one model")
    messages: list[ChatMessage] = Field(min_length=1, max_length=64,
                                        description="one user message with one video and the question")
    stream: bool = Field(False, description="answer with server-sent events, OpenAI chunk format, ending in [DONE]")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, description="cap on generated tokens (alias of max_completion_tokens)")
    max_completion_tokens: int | None = Field(None, description="cap on generated tokens")
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    vidsieve: AskOptionsBody | None = Field(None, description="vidsieve compression options for this request")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens the LLM read: the engine's stats.prompt_tokens when it reports it, "
                                           "else the visual tokens after compression (text tokens not counted)")
    completion_tokens: int = Field(description="tokens generated")
    total_tokens: int
    visual_tokens_before: int = Field(description="visual tokens before compression")
    visual_tokens_after: int = Field(description="visual tokens sent to the LLM")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    vidsieve: AskResponse = Field(description="the full answer object: accounting, kept positions, timings")


class ModelCard(BaseModel):
    id: str = Field(description="the model name to pass as `model` (or omit it)")
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "vidsieve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

"""`create_app(settings=None, engine=None)`: the vidsieve HTTP service as a FastAPI app.

With no engine given, the model loads in a background thread at startup: /healthz answers at once,
/readyz and the /v1 routes answer 503 until it is loaded. Tests pass their own engine.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from encoders.errors import VidsieveError
from serve import openai, routes
from serve.deps import EngineSlot
from serve.errors import install_error_handlers
from serve.files import FileStore
from serve.metrics import Metrics, RequestMetrics
from serve.queue import RefuseWhenFull, WorkQueue
from serve.settings import Settings, get_settings
from serve.uploads import FORM_OVERHEAD_BYTES, BodySizeLimit

log = logging.getLogger("vidsieve.serve")

DESCRIPTION = """Ask questions about videos with a multimodal LLM, sending it a fraction of the visual tokens.

Every error is `{"error": {"message", "type", "code"}}`. With an API key configured, `/v1/*` needs
`Authorization: Bearer <key>`. The web page is at `/`."""


# Routes that take a worker: refused with 429 before their (possibly large) body is read when the queue is full.
COMPUTE_PATHS = ("/v1/ask", "/v1/chat/completions")


def create_app(settings: Settings | None = None, engine=None) -> FastAPI:
    settings = settings or get_settings()
    owns_root = settings.files_dir is None
    root = Path(tempfile.mkdtemp(prefix="vidsieve-serve-")) if owns_root else Path(settings.files_dir)
    slot = EngineSlot()
    if engine is not None:
        slot.set_ready(engine)
    queue = WorkQueue(settings.workers, settings.queue_size, settings.timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if slot.status == "loading":
            threading.Thread(target=_load_into, args=(slot, settings), name="vidsieve-model-loader", daemon=True).start()
        try:
            yield
        finally:
            queue.shutdown()
            if engine is None and slot.status == "ready" and hasattr(slot.engine, "shutdown"):
                slot.engine.shutdown()  # an engine we loaded (Ray actors): release it; an injected one is the caller's
            app.state.files.clear()
            if owns_root:
                shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="vidsieve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine_slot = slot
    app.state.queue = queue
    app.state.metrics = Metrics(queue)
    app.state.files = FileStore(root / "files", max_files=settings.max_files, max_bytes=settings.max_files_bytes,
                                ttl_s=settings.file_ttl_s)
    app.state.uploads_root = root / "requests"

    install_error_handlers(app)
    app.include_router(routes.api)
    app.include_router(openai.router)
    app.include_router(routes.public)
    app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    # A data: URL carries 4 base64 characters per 3 bytes, so the body limit leaves room for that.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes * 4 // 3 + FORM_OVERHEAD_BYTES)
    app.add_middleware(RefuseWhenFull, queue_of=lambda scope: app.state.queue, paths=COMPUTE_PATHS)
    app.add_middleware(RequestMetrics, metrics_of=lambda scope: app.state.metrics)  # outermost: counts 413s too
    return app


def load_engine(settings: Settings):
    """The engine the settings ask for: in-process, or with its stages on a Ray cluster."""
    if settings.ray_address:
        from serve.ray_engine import load_ray_engine

        return load_ray_engine(settings)
    from pipeline.engine import Engine

    return Engine(model_dir=settings.model_dir)


def _load_into(slot: EngineSlot, settings: Settings) -> None:
    try:
        engine = load_engine(settings)
    except VidsieveError as e:
        log.error("model failed to load: %s", e)
        slot.set_failed(str(e))
    except Exception as e:  # noqa: BLE001 - reported by /readyz; the traceback goes to the log
        log.exception("model failed to load")
        slot.set_failed(f"{type(e).__name__}: {e}")
    else:
        log.info("model %s loaded", getattr(engine, "model_name", "?"))
        slot.set_ready(engine)

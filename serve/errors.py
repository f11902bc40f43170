"""The service's own errors and the one place any error becomes an HTTP response.

Every error answers `{"error": {"message", "type", "code"}}` (OpenAI's shape), never an HTML page or a
traceback. `VidsieveError.http_status` picks the status; `headers` adds e.g. Retry-After.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from encoders.errors import VidsieveError

log = logging.getLogger("vidsieve.serve")


class ServiceError(VidsieveError):
    """A VidsieveError raised by the service itself; may carry response headers."""

    headers: dict[str, str] | None = None


class Unauthorized(ServiceError):
    http_status = 401
    headers = {"WWW-Authenticate": "Bearer"}


class NotFound(ServiceError):
    http_status = 404


class Forbidden(ServiceError):
    http_status = 403


class UploadTooLarge(ServiceError):
    http_status = 413


class StoreFull(ServiceError):
    http_status = 507


class Overloaded(ServiceError):
    """Every worker is busy and the wait queue is full."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after_s))}


class NotReady(ServiceError):
    http_status = 503

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after_s))}


class RequestTimedOut(ServiceError):
    http_status = 504


# status -> OpenAI-like error "type"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
    507: "insufficient_storage",
}


def error_body(status: int, message: str) -> dict:
    """The JSON body of every error response (also the `data:` line of an error inside a stream)."""
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "code": status}}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def status_of(exc: BaseException) -> int:
    return getattr(exc, "http_status", 500) if isinstance(exc, VidsieveError) else 500


def message_of(exc: BaseException) -> str:
    """A client-safe message: the user-facing sentence of a VidsieveError, a generic line otherwise."""
    if isinstance(exc, VidsieveError):
        return str(exc)
    return f"internal error ({type(exc).__name__}); the server log has the details"


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the JSON error body, once, for the whole app."""

    @app.exception_handler(VidsieveError)
    async def _vidsieve(request: Request, exc: VidsieveError):
        return error_response(exc.http_status, str(exc), getattr(exc, "headers", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(422, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, message_of(exc))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"}) if hasattr(route, "matches") else (Match.NONE, None)
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


def _validation_message(exc: RequestValidationError) -> str:
    """'body.question: Field required; ...': where each problem is and what is wrong, in one line."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")

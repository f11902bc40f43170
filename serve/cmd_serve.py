"""`vidsieve serve`: start the HTTP service (web page at /, OpenAPI at /docs)."""

from __future__ import annotations

import argparse

from encoders.errors import BadRequest

# flag -> Settings field, for flags given on the command line (unset flags fall back to VIDSIEVE_* variables).
_FLAGS = ("host", "port", "model_dir", "ray_address", "allowed_media_dir", "api_key", "max_upload_mb", "workers",
          "queue_size", "timeout_s", "allow_remote_urls", "allow_insecure_public")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    p.add_argument("--model", dest="model_dir", default=None, help="model checkpoint directory (default: the demo model)")
    p.add_argument("--ray", dest="ray_address", default=None, metavar="ADDRESS", help="run the stages as actors on this Ray cluster")
    p.add_argument("--allowed-media-dir", default=None, metavar="DIR", help="allow file:// video URLs inside DIR")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 (default: $VIDSIEVE_API_KEY)")
    p.add_argument("--max-upload-mb", type=float, default=None, help="largest accepted video in MiB (default 200)")
    p.add_argument("--workers", type=int, default=None, help="requests computed at once (default 1)")
    p.add_argument("--queue-size", type=int, default=None, help="requests allowed to wait; more get 429 (default 8)")
    p.add_argument("--timeout-s", type=float, default=None, help="per-request limit in seconds, waiting included (default 300)")
    p.add_argument("--allow-remote-urls", action="store_true", default=None, help="allow http(s) video URLs (fetched by the server)")
    p.add_argument("--allow-insecure-public", action="store_true", default=None,
                   help="allow a non-loopback --host without an API key")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")


def settings_from_args(args: argparse.Namespace):
    from pydantic import ValidationError

    from serve.settings import Settings

    given = {k: getattr(args, k) for k in _FLAGS if getattr(args, k, None) is not None}
    try:
        settings = Settings(**given)
    except ValidationError as e:
        first = e.errors()[0]
        raise BadRequest(f"--{'-'.join(str(x) for x in first['loc']).replace('_', '-')}: {first['msg']}") from None
    settings.check_exposure()
    return settings


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from serve.app import create_app

    settings = settings_from_args(args)
    if settings.ray_address:
        from serve.ray_engine import check_ray_stages

        check_ray_stages(settings)  # fail before binding the port
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0

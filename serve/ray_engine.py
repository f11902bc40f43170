"""`--ray ADDRESS`: run the engine's stages as actors on a Ray cluster.

The actor stages live in pipeline/ray_stages.py (written in another issue). Until that module exists this
raises a clear error instead of quietly running in-process.
"""

from __future__ import annotations

import importlib.util

from encoders.errors import VidsieveError


class RayNotAvailable(VidsieveError):
    http_status = 503


def check_ray_stages(settings) -> None:
    if importlib.util.find_spec("pipeline.ray_stages") is None:
        raise RayNotAvailable(
            f"--ray {settings.ray_address}: Ray actor stages (pipeline/ray_stages.py) are not available yet; "
            "serve without --ray to run the stages in-process"
        )


def load_ray_engine(settings):
    check_ray_stages(settings)
    from pipeline import ray_stages

    factory = getattr(ray_stages, "RayEngine", None)
    if factory is None:
        raise RayNotAvailable("pipeline/ray_stages.py has no RayEngine; serve without --ray to run the stages in-process")
    return factory(address=settings.ray_address, model_dir=settings.model_dir)

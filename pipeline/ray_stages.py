"""The engine's stages hosted in Ray actors: same code, same answers, spread over a cluster.

    engine = RayEngine(address=None, model_dir="path/to/checkpoint", decode_workers=2)
    engine.ask(video, question, AskOptions())            # same dict as Engine.ask
    for outcome in engine.run(jobs, options):            # many videos, pipelined, bounded in flight
        ...

Stages and where they run:
- decode  -> a pool of `decode_workers` actors, one CPU each (Engine.decode).
- encode + compress -> encoder actor(s) (Engine.encode, Engine.compress: compression needs the
  decode's codec signals), a GPU share when the cluster has GPUs.
- answer -> LLM actor(s) (Engine.prefill once per video, Engine.answer per question, as
  Engine.ask_many does), a GPU share likewise.
Encoder and LLM actors build a whole Engine; decode actors build only a `pipeline.decoder.Decoder`
from the checkpoint's processor config (cell size, pixel cap): no weights in the decode pool.
Objects flow actor to actor through Ray's object store (ObjectRefs chained on submission), so the
driver never touches frames or tokens. Overlap: the engine has no chunked decode of one video, so the
pipeline overlaps *videos*: while the encoder works on video k, the decode pool is already decoding
videos k+1..k+n; the `max_in_flight` cap bounds how many videos' frames and tokens exist at once.

Failures: a bad video raises a `VidsieveError` inside an actor; it comes back as that error (an
`Outcome.error`), nothing else stops. A worker process that dies is restarted by Ray
(`max_restarts`) and its queued calls retried (`max_task_retries`); a job whose result is still lost
(the actor died past its retries) is resubmitted by `run` up to `retries` times.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

from encoders.errors import BadRequest, VidsieveError

log = logging.getLogger(__name__)

RESTARTS = 3  # per actor: Ray restarts a dead actor this many times and retries its queued calls
READY_TIMEOUT_S = 600.0
# Errors that mean "the worker went away", not "the video is bad": the job is worth running again.
WORKER_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)
# Modules that mean "this process holds a model"; the decode pool imports none of them.
MODEL_MODULES = ("pipeline.llm", "encoders.vit", "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl")


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(address: str | None = None) -> dict[str, float]:
    """Join a Ray cluster (or start one) and return its resources.

    address: None = RAY_ADDRESS, else a cluster started with `ray start` on this machine, else a new
        local one (Ray's own rule); "auto" = an existing cluster or an error; "local" = always a new
        local cluster; "HOST:PORT" = that cluster. Inside `ray job submit`, RAY_ADDRESS is set.
    Token authentication is Ray's default; a client finds its token through RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (README, "Batch jobs with Ray").
    """
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as e:
            raise BadRequest(f"cannot reach a Ray cluster at address {address!r}: {e}") from e
    return dict(ray.cluster_resources())


def stage_resources(cluster: dict[str, float], model_actors: int) -> tuple[dict, dict]:
    """(decode actor options, model actor options) for a cluster's resources.

    Decode actors take one CPU each: decoding is CPU work and the pool size is what scales it.
    Model actors (encoder, LLM) share the GPUs when there are any (a whole GPU each when there are
    enough); on a CPU-only cluster they claim no CPU slot, so the decode pool can fill every CPU
    while the models run their torch threads beside it.
    """
    gpus = float(cluster.get("GPU", 0.0))
    decode = {"num_cpus": 1}
    if gpus > 0:
        model = {"num_cpus": 0, "num_gpus": min(1.0, gpus / max(model_actors, 1))}
    else:
        model = {"num_cpus": 0}
    return decode, model


# ---------------------------------------------------------------------------------------------
# Actors: thin hosts around the engine's stage methods


class _StageHost:
    """Builds one engine in the actor's process. A user error while loading (a bad --model) is kept
    and raised by `ready()`, so the driver gets the one-line error instead of a dead actor."""

    def __init__(self, model_dir: str, torch_threads: int | None = None):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self._error: VidsieveError | None = None
        self.engine = None
        try:
            from pipeline.engine import Engine

            self.engine = Engine(model_dir)
        except VidsieveError as e:
            self._error = e

    def ready(self) -> str:
        if self._error is not None:
            raise self._error
        return self.engine.model_name

    def pid(self) -> int:
        return os.getpid()


class DecodeHost:
    """A model-free decode worker: the checkpoint's processor config only, never its weights."""

    def __init__(self, model_dir: str, torch_threads: int | None = None):
        self._error: VidsieveError | None = None
        self.decoder = None
        self.model_name = os.path.basename(os.path.normpath(model_dir))
        try:
            from pipeline.decoder import Decoder

            self.decoder = Decoder.from_model_dir(model_dir)  # resolved by the driver
        except VidsieveError as e:
            self._error = e

    def ready(self) -> str:
        if self._error is not None:
            raise self._error
        return self.model_name

    def pid(self) -> int:
        return os.getpid()

    def loaded_modules(self) -> list[str]:
        """Which model modules this process has imported (tests: none in the decode pool)."""
        import sys

        return sorted(m for m in MODEL_MODULES if m in sys.modules)

    def decode(self, video_path: str, options):
        from tokencomp.registry import parse_strategy

        return self.decoder.decode(video_path, options, signals="codec" in parse_strategy(options.strategy))


class EncodeHost(_StageHost):
    def prepare(self, decoded, options, questions: list[str]):
        """Encode, then compress: once (an Encoded), or once per question (a list) when the strategy
        reads the question. Compression runs here because it needs the decode's codec signals."""
        from pipeline.engine import QUESTION_AWARE
        from tokencomp.registry import parse_strategy

        encoded = self.engine.encode(decoded, options)
        signals = decoded.sampled.signals
        if QUESTION_AWARE & set(parse_strategy(options.strategy)):
            return [self.engine.compress(encoded, options, signals=signals, question=q) for q in questions]
        return self.engine.compress(encoded, options, signals=signals)


class AnswerHost(_StageHost):
    def answer_many(self, prepared, questions: list[str], options) -> list[dict]:
        """One answer dict per question; a shared prepared video is prefilled once (Engine.ask_many)."""
        if isinstance(prepared, list):
            return [self.engine.answer(e, q, options) for e, q in zip(prepared, questions, strict=True)]
        prefix = self.engine.prefill(prepared, options)
        return [self.engine.answer(prepared, q, options, prefix=prefix) for q in questions]

    def answer_stream(self, prepared, question: str, options) -> Iterator[dict]:
        if isinstance(prepared, list):
            (prepared,) = prepared
        yield from self.engine.answer_stream(prepared, question, options)


DecodeActor = ray.remote(DecodeHost)
EncodeActor = ray.remote(EncodeHost)
AnswerActor = ray.remote(AnswerHost)


# ---------------------------------------------------------------------------------------------
# Results of many videos


@dataclass(frozen=True)
class Job:
    """One video and the questions to ask about it; `key` is the caller's, returned untouched."""

    video: str
    questions: tuple[str, ...]
    key: Any = None


@dataclass(frozen=True)
class Outcome:
    """What became of a Job: `results` (one answer dict per question, in order) or `error` (one line)."""

    job: Job
    results: list[dict] | None = None
    error: str | None = None
    attempts: int = 1


def error_line(e: BaseException) -> str:
    """One line for an error that came back from an actor: the user's error as is, else labelled."""
    cause = user_error(e)
    if cause is not None:
        return str(cause)
    if isinstance(e, RayTaskError) and e.cause is not None:
        e = e.cause
    text = " ".join(str(e).split())
    return f"internal error: {type(e).__name__}: {text[:500]}"


def user_error(e: BaseException) -> VidsieveError | None:
    """The VidsieveError behind `e` (Ray wraps an actor's exception in a RayTaskError), or None."""
    while isinstance(e, RayTaskError) and e.cause is not None and e.cause is not e:
        e = e.cause
    return e if isinstance(e, VidsieveError) else None


# ---------------------------------------------------------------------------------------------
# The engine


class RayEngine:
    """Engine's ask/ask_many/ask_stream with every stage in Ray actors (see the module docstring).

    address: where the cluster is (`connect`). model_dir: the checkpoint, resolved on the driver
        (None -> $VIDSIEVE_MODEL -> the shipped demo model) and given to every actor as an absolute
        path, so it must be readable at that path on every node (shared storage on a cluster).
    decode_workers / encode_workers / answer_workers: actor pool sizes.
    torch_threads: torch threads in each model actor (None: Ray's default for the actor).
    """

    def __init__(
        self,
        address: str | None = None,
        model_dir: str | os.PathLike | None = None,
        *,
        decode_workers: int = 1,
        encode_workers: int = 1,
        answer_workers: int = 1,
        torch_threads: int | None = None,
    ):
        for name, n in (("decode_workers", decode_workers), ("encode_workers", encode_workers), ("answer_workers", answer_workers)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise BadRequest(f"{name} must be an integer >= 1, got {n!r}")
        cluster = connect(address)
        cpus = float(cluster.get("CPU", 0.0))
        if decode_workers > cpus:
            raise BadRequest(
                f"decode_workers={decode_workers} needs {decode_workers} CPUs but the Ray cluster has {cpus:g}; "
                f"use at most {int(cpus)} or add nodes"
            )
        from pipeline.engine import default_model_dir

        self.model_dir = model_dir = str(default_model_dir(model_dir).resolve())
        decode_opts, model_opts = stage_resources(cluster, encode_workers + answer_workers)
        retry = {"max_restarts": RESTARTS, "max_task_retries": RESTARTS}
        # Decode actors get one torch thread: their CPU is the decoder's; frames need no torch math.
        self.decoders = [DecodeActor.options(**decode_opts, **retry).remote(model_dir, 1) for _ in range(decode_workers)]
        self.encoders = [EncodeActor.options(**model_opts, **retry).remote(model_dir, torch_threads) for _ in range(encode_workers)]
        self.answerers = [AnswerActor.options(**model_opts, **retry).remote(model_dir, torch_threads) for _ in range(answer_workers)]
        self.resources = {"decode": decode_opts, "model": model_opts, "cluster": cluster}
        try:
            names = ray.get([a.ready.remote() for a in self._actors()], timeout=READY_TIMEOUT_S)
        except RayTaskError as e:
            self.shutdown()
            cause = user_error(e)
            if cause is not None:
                raise cause from None
            raise
        self.model_name = names[-1]
        self._lock = threading.Lock()
        self._load = {"decode": [0] * decode_workers, "encode": [0] * encode_workers, "answer": [0] * answer_workers}

    # -- the Engine API -------------------------------------------------------------------------

    def ask(self, video_path, question: str, options) -> dict:
        return self.ask_many(video_path, [question], options)[0]

    def ask_many(self, video_path, questions: list[str], options) -> list[dict]:
        ref, slots = self._submit(str(video_path), list(questions), options)
        try:
            return self._get(ref)
        finally:
            self._release(slots)

    def ask_stream(self, video_path, question: str, options) -> Iterator[dict]:
        """{"delta": text} ... then {"result": dict}, as Engine.ask_stream."""
        slots = {stage: self._pick(stage) for stage in ("decode", "encode", "answer")}
        try:
            decoded = self.decoders[slots["decode"]].decode.remote(str(video_path), options)
            prepared = self.encoders[slots["encode"]].prepare.remote(decoded, options, [question])
            answerer = self.answerers[slots["answer"]]
            for item_ref in answerer.answer_stream.options(num_returns="streaming").remote(prepared, question, options):
                yield self._get(item_ref)
        finally:
            self._release(slots)

    # -- many videos ----------------------------------------------------------------------------

    def run(self, jobs: Iterable[Job], options, *, max_in_flight: int | None = None, retries: int = 2) -> Iterator[Outcome]:
        """Yield one Outcome per Job as each completes (not in input order).

        Pulls jobs from `jobs` lazily, keeping at most `max_in_flight` videos submitted and not yet
        returned (default 2 per actor, so every stage has its next video queued), so a huge iterable
        never sits in memory. A job
        whose worker died (past Ray's own restarts and retries) is resubmitted up to `retries` times.
        """
        cap = max_in_flight or 2 * len(self._actors())
        if cap < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        source = iter(jobs)
        again: deque[tuple[Job, int]] = deque()
        in_flight: dict[ray.ObjectRef, tuple[Job, int, dict]] = {}
        exhausted = False
        while True:
            while len(in_flight) < cap and (again or not exhausted):
                if again:
                    job, attempt = again.popleft()
                else:
                    job = next(source, None)
                    if job is None:
                        exhausted = True
                        break
                    attempt = 1
                ref, slots = self._submit(job.video, list(job.questions), options)
                in_flight[ref] = (job, attempt, slots)
            if not in_flight:
                return
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            job, attempt, slots = in_flight.pop(ref)
            self._release(slots)
            try:
                yield Outcome(job, results=ray.get(ref), attempts=attempt)
            except WORKER_LOST as e:
                if attempt <= retries:
                    log.warning("worker lost on %s (attempt %d), resubmitting: %s", job.video, attempt, error_line(e))
                    again.append((job, attempt + 1))
                else:
                    yield Outcome(job, error=f"worker lost {attempt} times: {error_line(e)}", attempts=attempt)
            except RayTaskError as e:
                yield Outcome(job, error=error_line(e), attempts=attempt)

    # -- plumbing -------------------------------------------------------------------------------

    def _submit(self, video: str, questions: list[str], options) -> tuple[ray.ObjectRef, dict]:
        """Chain decode -> encode -> answer for one video; the least-loaded actor of each pool."""
        slots = {stage: self._pick(stage) for stage in ("decode", "encode", "answer")}
        decoded = self.decoders[slots["decode"]].decode.remote(video, options)
        prepared = self.encoders[slots["encode"]].prepare.remote(decoded, options, questions)
        return self.answerers[slots["answer"]].answer_many.remote(prepared, questions, options), slots

    def _pick(self, stage: str) -> int:
        with self._lock:  # the service calls one RayEngine from many threads
            load = self._load[stage]
            i = min(range(len(load)), key=load.__getitem__)
            load[i] += 1
            return i

    def _release(self, slots: dict) -> None:
        with self._lock:
            for stage, i in slots.items():
                self._load[stage][i] -= 1

    @staticmethod
    def _get(ref):
        try:
            return ray.get(ref)
        except RayTaskError as e:
            cause = user_error(e)
            if cause is not None:
                raise cause from None
            raise

    def _actors(self) -> list:
        return [*self.decoders, *self.encoders, *self.answerers]

    def worker_pids(self) -> dict[str, list[int]]:
        """Process id of every actor, by stage (what a test kills to check the retries)."""
        stages = {"decode": self.decoders, "encode": self.encoders, "answer": self.answerers}
        return {stage: ray.get([a.pid.remote() for a in actors]) for stage, actors in stages.items()}

    def shutdown(self) -> None:
        """Kill this engine's actors (the cluster stays up)."""
        for actor in self._actors():
            ray.kill(actor, no_restart=True)
        self.decoders, self.encoders, self.answerers = [], [], []

"""RayEngine: the engine's stages in Ray actors give the in-process Engine's answers.

One real Ray cluster for the module (`ray start --head` subprocess, token auth on), a tiny random
Qwen2.5-VL checkpoint and generated H.264 videos.
"""

from __future__ import annotations

import os
import signal

import pytest

from encoders.errors import BadRequest, VidsieveError
from pipeline.engine import Engine
from pipeline.options import AskOptions
from pipeline.ray_stages import Job, RayEngine, stage_resources
from pipeline.videogen import moving_square_video
from tests.fixtures.ray_cluster import RayHead, client_of
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

PROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
QUESTIONS = ["What moves?", "Which way does it go?"]
OPTIONS = {
    "none": AskOptions(max_new_tokens=4, fps=8.0),
    "temporal": AskOptions(strategy="temporal", keep_ratio=0.25, max_new_tokens=4, fps=8.0),
    "query": AskOptions(strategy="query", keep_ratio=0.5, max_new_tokens=4, fps=8.0),
    # codec signals come from the model-free decode actors; chunks are encoded run by run there,
    # decoded in overlapped runs in-process: same answers
    "codec-chunked": AskOptions(strategy="codec", keep_ratio=0.3, max_new_tokens=4, fps=8.0, chunk_frames=4),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny"), processor_overrides=PROCESSOR)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    paths = []
    for i, step in enumerate([(6, 0), (0, 5)]):
        paths.append(d / f"square{i}.mp4")
        moving_square_video(paths[-1], "h264", width=112, height=112, num_frames=16, fps=8.0, square_px=28, step_px=step, seed=i)
    bad = d / "corrupt.mp4"
    bad.write_bytes(paths[0].read_bytes()[:600])  # a truncated copy: header, no usable frames
    return paths, bad


@pytest.fixture(scope="module")
def engine(model):
    return Engine(model)


@pytest.fixture(scope="module")
def rengine(model):
    import ray

    with RayHead(num_cpus=2) as head, client_of(head):
        try:
            eng = RayEngine(address=head.address, model_dir=model, decode_workers=2)
            yield eng
            eng.shutdown()
        finally:
            ray.shutdown()


def _same(a: dict, b: dict) -> None:
    assert a["output_token_ids"] == b["output_token_ids"], "Ray vs in-process token ids differ"
    assert a["answer"] == b["answer"]
    assert a["kept"] == b["kept"]
    for key in ("frames", "grid", "tokens_before", "tokens_after", "strategy", "budget", "frame_times_s", "model"):
        assert a["stats"][key] == b["stats"][key], key


@pytest.mark.parametrize("name", list(OPTIONS))
def test_ask_many_matches_in_process_engine(rengine, engine, videos, name):
    video = videos[0][0]
    ray_results = rengine.ask_many(video, QUESTIONS, OPTIONS[name])
    local = engine.ask_many(video, QUESTIONS, OPTIONS[name])
    assert len(ray_results) == len(QUESTIONS)
    for r, l in zip(ray_results, local):
        _same(r, l)
    if name != "none":
        assert ray_results[0]["stats"]["tokens_after"] < ray_results[0]["stats"]["tokens_before"]
    assert set(ray_results[0]["stats"]["timings_ms"]) >= {"decode", "encode", "prefill", "generate", "total"}


def test_ask_and_stream_match_in_process_engine(rengine, engine, videos):
    video, opts = videos[0][1], OPTIONS["temporal"]
    _same(rengine.ask(video, QUESTIONS[1], opts), engine.ask(video, QUESTIONS[1], opts))
    events = list(rengine.ask_stream(video, QUESTIONS[1], opts))
    assert "result" in events[-1] and all("delta" in e for e in events[:-1])
    _same(events[-1]["result"], engine.ask(video, QUESTIONS[1], opts))
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["result"]["answer"]


def test_run_answers_every_video_and_reports_the_bad_one(rengine, engine, videos):
    good, bad = videos
    jobs = [Job(str(good[0]), tuple(QUESTIONS), key=0), Job(str(bad), ("What moves?",), key=1), Job(str(good[1]), ("What moves?",), key=2)]
    outcomes = {o.job.key: o for o in rengine.run(iter(jobs), OPTIONS["none"], max_in_flight=2)}
    assert sorted(outcomes) == [0, 1, 2]
    assert outcomes[1].results is None and "corrupt.mp4" in outcomes[1].error
    assert outcomes[0].error is None and outcomes[2].error is None
    _same(outcomes[0].results[1], engine.ask(good[0], QUESTIONS[1], OPTIONS["none"]))
    _same(outcomes[2].results[0], engine.ask(good[1], "What moves?", OPTIONS["none"]))


def test_bad_video_raises_the_users_error(rengine, videos):
    with pytest.raises(VidsieveError, match="corrupt.mp4"):
        rengine.ask(videos[1], "What moves?", OPTIONS["none"])


def test_killed_answer_actor_is_restarted_and_the_call_retried(rengine, engine, videos):
    video, opts = videos[0][0], OPTIONS["none"]
    before = rengine.worker_pids()["answer"][0]
    os.kill(before, signal.SIGKILL)
    result = rengine.ask(video, QUESTIONS[0], opts)  # submitted to the dead actor: Ray restarts it and retries
    _same(result, engine.ask(video, QUESTIONS[0], opts))
    after = rengine.worker_pids()["answer"][0]
    assert after != before


def test_decode_actors_hold_no_model(rengine):
    import ray

    from pipeline.decoder import Decoder

    assert ray.get([d.loaded_modules.remote() for d in rengine.decoders]) == [[], []]
    # and they decode at the loaded model's cell size and pixel cap
    assert ray.get(rengine.decoders[0].__ray_call__.remote(lambda self: self.decoder)) == Engine(rengine.model_dir).decoder
    assert isinstance(Engine(rengine.model_dir).decoder, Decoder)


def test_more_decode_workers_than_cpus_is_refused(rengine, model):
    with pytest.raises(BadRequest, match="decode_workers=3 needs 3 CPUs"):
        RayEngine(address="auto", model_dir=model, decode_workers=3)


def test_model_actors_claim_gpus_only_when_the_cluster_has_them():
    decode, model = stage_resources({"CPU": 8.0}, model_actors=2)
    assert decode == {"num_cpus": 1} and "num_gpus" not in model
    _, model = stage_resources({"CPU": 8.0, "GPU": 1.0}, model_actors=2)
    assert model["num_gpus"] == 0.5  # encoder and LLM share the one GPU
    _, model = stage_resources({"CPU": 8.0, "GPU": 4.0}, model_actors=2)
    assert model["num_gpus"] == 1.0

"""The batch job: `ray job submit ... -- python -m pipeline.batch` over a directory of generated videos.

Input checks run in-process (no Ray). The rest share one real cluster (`ray start --head` subprocess,
token auth on, 2 CPUs), a tiny random Qwen2.5-VL checkpoint and a directory of H.264 videos with a
corrupt one: a real job submission with a worker killed mid-run, a rerun, a resume after a crash,
and a submission without the token.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.batch import ResultLog, main, read_keys, repair_tail
from pipeline.engine import Engine
from pipeline.options import AskOptions
from pipeline.videogen import moving_square_video
from tests.fixtures.ray_cluster import RAY_BIN, RayHead
from tests.fixtures.tiny_qwen import make_tiny_qwen2_5_vl

REPO = Path(__file__).resolve().parents[1]
PROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
COMMON = ["What moves?", "Which way does it go?"]
TARGETED = ("square1.mp4", "Is it square 1?")
GOOD = [f"square{i}.mp4" for i in range(6)]
KNOBS = ["--fps", "4", "--max-new-tokens", "4"]
OPTIONS = AskOptions(fps=4.0, max_new_tokens=4)  # what KNOBS mean


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny"), processor_overrides=PROCESSOR)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(GOOD):
        moving_square_video(d / name, "h264", width=112, height=112, num_frames=16, fps=8.0, square_px=28, step_px=(i + 2, 1), seed=i)
    (d / "corrupt.mp4").write_bytes((d / GOOD[0]).read_bytes()[:600])  # truncated: no usable frames
    (d / "notes.txt").write_text("not a video, not a result line")
    return d


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "questions.jsonl"
    lines = [{"question": q} for q in COMMON] + [{"video": TARGETED[0], "question": TARGETED[1]}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def expected_pairs(video_dir: Path) -> set[tuple[str, str]]:
    videos = [str(video_dir / n) for n in [*GOOD, "corrupt.mp4"]]
    return {(v, q) for v in videos for q in COMMON} | {(str(video_dir / TARGETED[0]), TARGETED[1])}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def head():
    with RayHead(num_cpus=2) as h:
        yield h


def batch_args(video_dir, questions, out, model) -> list[str]:
    return ["--input", str(video_dir), "--questions", str(questions), "--output", str(out), "--model", str(model), *KNOBS]


def run_local(head: RayHead, args: list[str]) -> subprocess.CompletedProcess:
    """The entrypoint as a plain driver on this machine, joining the cluster through RAY_ADDRESS."""
    return subprocess.run([sys.executable, "-m", "pipeline.batch", *args], env=head.env(), cwd=REPO, capture_output=True, text=True, timeout=600)


def ray_cli(head: RayHead, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY_BIN), *args], env=head.env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def jobs_client(head: RayHead):
    """Ray's job client on the dashboard, for fast polling (the CLI takes seconds a call here)."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {head.token_path.read_text().strip()}"})


@pytest.fixture(scope="module")
def submitted(head, video_dir, questions, model, tmp_path_factory):
    """One real `ray job submit --working-dir .` of the entrypoint, with its LLM actor killed once the job runs.

    The job's log names each actor's PID (each actor reports os.getpid()); once the workers line
    is in the log, this kills the LLM actor's process. Returns (output path, job logs, kill info).
    """
    out = tmp_path_factory.mktemp("out") / "results.jsonl"
    entry = ["python", "-m", "pipeline.batch", *batch_args(video_dir, questions, out, model), "--decode-workers", "2", "--max-in-flight", "1"]
    submit = ray_cli(
        head, "job", "submit", "--no-wait", "--address", head.dashboard_url, "--working-dir", ".",
        "--runtime-env-json", json.dumps({"excludes": [".git"]}), "--", *entry,
    )
    assert submit.returncode == 0, f"ray job submit failed:\n{submit.stdout[-3000:]}\n{submit.stderr[-3000:]}\n{head.log_tail()}"
    job_id = re.search(r"Job '(raysubmit_\w+)' submitted successfully", submit.stdout + submit.stderr).group(1)
    client = jobs_client(head)
    deadline = time.monotonic() + 480
    pids = None
    while pids is None:
        assert time.monotonic() < deadline and not client.get_job_status(job_id).is_terminal(), client.get_job_logs(job_id)
        found = re.search(r"batch: workers (\{.*\}) model ", client.get_job_logs(job_id))
        pids = json.loads(found.group(1)) if found else time.sleep(0.05)
    # Kill as soon as the workers are up (waiting for a first result line lost the race on a loaded
    # machine: seven tiny videos take under a second once the actors are ready).
    kill = {"written_at_kill": out.read_text().count("\n") if out.exists() else 0, "pid": pids["answer"][0]}
    os.kill(kill["pid"], signal.SIGKILL)  # the LLM actor: its model and the calls it held are gone
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)
        time.sleep(0.5)
    logs = client.get_job_logs(job_id)
    assert status.value == "SUCCEEDED", f"{status}\n{logs}"
    return out, logs, kill


# ---------------------------------------------------------------------------------------------
# Input checks: one line on stderr, exit 2 (no cluster needed)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "ok"}\nnot json\n', "line 2 is not JSON"),
        ('{"q": "typo"}\n', 'line 1 needs a non-empty string "question"'),
        ('{"question": "ok", "lang": "en"}\n', "unknown key(s) ['lang']"),
        ('{"video": "../x.mp4", "question": "ok"}\n', '"video" must be a file name'),
        ("\n\n", "holds no questions"),
        ('{"video": "missing.mp4", "question": "ok"}\n', "names video(s) ['missing.mp4']"),
    ],
)
def test_bad_questions_file_is_one_line_exit_2(tmp_path, video_dir, capsys, content, message):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(content)
    code = main(["--input", str(video_dir), "--questions", str(qfile), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert message in err and str(qfile) in err
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


@pytest.mark.parametrize("which", ["missing", "empty", "file"])
def test_bad_input_dir_is_one_line_exit_2(tmp_path, capsys, which):
    target = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "file": tmp_path / "f.mp4"}[which]
    if which == "empty":
        target.mkdir()
        (target / "readme.txt").write_text("x")
    if which == "file":
        target.write_bytes(b"x")
    code = main(["--input", str(target), "--question", "What moves?", "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(target) in err, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--keep-ratio", "1.5"], "keep_ratio must be a number in (0, 1]"),
        (["--strategy", "uniform"], "--strategy uniform needs a budget"),
        (["--strategy", "no-such-strategy", "--keep-ratio", "0.5"], "no-such-strategy"),
    ],
)
def test_bad_options_are_one_line_exit_2(tmp_path, video_dir, capsys, extra, message):
    code = main(["--input", str(video_dir), "--question", "q", "--output", str(tmp_path / "o.jsonl"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.jsonl").exists()


def test_output_partial_last_line_is_cut_and_pairs_are_written_once(tmp_path):
    out = tmp_path / "o.jsonl"
    whole = json.dumps({"video": "/v/a.mp4", "question": "q1", "answer": "x", "stats": {}}) + "\n"
    out.write_text(whole + '{"video": "/v/a.mp4", "quest')
    log = ResultLog(out)
    assert log.truncated_bytes == len('{"video": "/v/a.mp4", "quest') and out.read_text() == whole
    assert ("/v/a.mp4", "q1") in log and log.found == 1
    assert log.write({"video": "/v/a.mp4", "question": "q2", "error": "bad"})
    assert not log.write({"video": "/v/a.mp4", "question": "q2", "error": "again"})  # a pair is written once
    log.close()
    assert list(read_keys(out)) == [("/v/a.mp4", "q1"), ("/v/a.mp4", "q2")]
    assert repair_tail(out) == 0


def test_output_that_is_not_ours_is_refused(tmp_path, video_dir, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text("hello world\n")
    code = main(["--input", str(video_dir), "--question", "q", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "line 1 is not a batch result line" in err
    assert out.read_text() == "hello world\n"


# ---------------------------------------------------------------------------------------------
# On the cluster


def test_job_submit_answers_every_pair_once_despite_a_killed_worker(submitted, video_dir, model):
    out, logs, kill = submitted
    assert kill["written_at_kill"] < len(expected_pairs(video_dir)), "the job ended before the kill"
    lines = lines_of(out)
    keys = Counter((x["video"], x["question"]) for x in lines)
    assert set(keys) == expected_pairs(video_dir) and max(keys.values()) == 1
    for x in lines:
        if x["video"].endswith("corrupt.mp4"):
            assert "answer" not in x and "corrupt.mp4" in x["error"]
        else:
            assert "error" not in x and isinstance(x["answer"], str)
            s = x["stats"]
            assert s["tokens_after"] == s["tokens_before"] > 0 and s["strategy"] == "none"
            assert set(s["timings_ms"]) >= {"decode", "encode", "prefill", "generate", "total"}
    assert "15/15 pairs, 7/7 videos" in logs  # progress
    assert "batch: done: 7 videos, 15 lines, 2 errors" in logs and "videos/s" in logs  # summary
    # Same answers as the in-process engine (ask_many: the questions share one prefill).
    video = video_dir / TARGETED[0]
    local = Engine(model).ask_many(video, [*COMMON, TARGETED[1]], OPTIONS)
    by_q = {x["question"]: x for x in lines if x["video"] == str(video)}
    assert [by_q[q]["answer"] for q in [*COMMON, TARGETED[1]]] == [r["answer"] for r in local]
    assert [by_q[q]["stats"]["grid"] for q in COMMON] == [r["stats"]["grid"] for r in local[:2]]


def test_rerun_of_a_finished_job_adds_nothing(submitted, head, video_dir, questions, model):
    out = submitted[0]
    before = out.read_bytes()
    proc = run_local(head, batch_args(video_dir, questions, out, model))
    assert proc.returncode == 0, proc.stderr
    assert "0 pairs over 0 videos to do; 15 already in" in proc.stderr
    assert out.read_bytes() == before


def test_resume_after_a_crash_mid_write(submitted, head, video_dir, questions, model, tmp_path):
    full = submitted[0].read_text().splitlines(keepends=True)
    out = tmp_path / "resumed.jsonl"
    # A crash: the last 4 lines never written, the one before them written halfway.
    out.write_text("".join(full[:10]) + full[10][: len(full[10]) // 2])
    proc = run_local(head, [*batch_args(video_dir, questions, out, model), "--max-in-flight", "2"])
    assert proc.returncode == 0, proc.stderr
    assert "cut a" in proc.stderr and "5 pairs over" in proc.stderr
    lines = lines_of(out)
    keys = Counter((x["video"], x["question"]) for x in lines)
    assert set(keys) == expected_pairs(video_dir) and max(keys.values()) == 1
    assert lines[:10] == [json.loads(x) for x in full[:10]]
    original = {(x["video"], x["question"]): x.get("answer", x.get("error")) for x in map(json.loads, full)}
    assert {(x["video"], x["question"]): x.get("answer", x.get("error")) for x in lines} == original


def test_submit_without_the_token_is_refused(head):
    env = head.env(with_token=False)
    env["HOME"] = str(head.root / "nobody")  # no ~/.ray/auth_token either
    env.pop("RAY_ADDRESS")
    proc = subprocess.run(
        [str(RAY_BIN), "job", "submit", "--address", head.dashboard_url, "--", "python", "-c", "print(1)"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "authentication" in (proc.stdout + proc.stderr).lower()
    assert "Job 'raysubmit_" not in proc.stdout + proc.stderr

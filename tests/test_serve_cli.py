"""`vidsieve serve` as a user runs it: a real process on a real port; refuses unsafe exposure and bad flags
with one line (those two in-process: same parser and error path, without paying a torch import each)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.serve_support import shared_tiny_model_dir

VIDSIEVE = [sys.executable, "-m", "pipeline.cli"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """`vidsieve ARGS` in-process (same parser and error printing as the console script): (exit code, stderr)."""
    from pipeline.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def test_public_host_without_api_key_refuses_to_start(capsys, monkeypatch):
    monkeypatch.delenv("VIDSIEVE_API_KEY", raising=False)
    code, err = run_cli(capsys, "serve", "--host", "0.0.0.0")
    assert code == 2
    assert err.count("\n") == 1 and "--api-key" in err and "--allow-insecure-public" in err, err


def test_bad_flag_values_are_one_line_errors(capsys, tmp_path):
    code, err = run_cli(capsys, "serve", "--workers", "0")
    assert code == 2 and "--workers" in err and err.count("\n") == 1, err
    code, err = run_cli(capsys, "serve", "--allowed-media-dir", str(tmp_path / "missing"))
    assert code == 2 and "allowed-media-dir" in err and err.count("\n") == 1, err


def test_serve_starts_answers_and_stops():
    model_dir = shared_tiny_model_dir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*VIDSIEVE, "serve", "--model", str(model_dir), "--port", str(port), "--api-key", "k",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(base + "/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, (ready and ready.text, proc.poll())
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}
        assert httpx.get(base + "/v1/files").status_code == 401
        assert httpx.get(base + "/v1/files", headers={"Authorization": "Bearer k"}).json() == {"object": "list", "data": []}
        assert "vidsieve" in httpx.get(base + "/").text
        assert httpx.get(base + "/openapi.json").json()["info"]["title"] == "vidsieve"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out

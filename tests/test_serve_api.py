"""The service code around the engine: routes, limits, bad input, auth, media URLs, files, errors, metrics.

These tests use `StandInEngine` (tests/serve_support.py) because they are about the HTTP layer, not the
model: every check here happens before or after the engine call. End-to-end runs with a real engine
are in test_serve_e2e.py.
"""

from __future__ import annotations

import base64
import json
import threading

import pytest
from fastapi.testclient import TestClient

from serve.app import create_app
from serve.settings import Settings
from tests.serve_support import StandInEngine, bad_files, make_video, served_files


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("videos") / "square.mp4")


def client_for(engine=None, **settings) -> TestClient:
    app = create_app(Settings(**settings), engine=engine or StandInEngine())
    return TestClient(app, raise_server_exceptions=False)


def upload(video, name="square.mp4"):
    return {"video": (name, video.read_bytes(), "video/mp4")}


def chat_body(url: str, question: str = "what moves?", **extra) -> dict:
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": content}], **extra}


def assert_error(r, status: int):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert err["code"] == status and err["message"] and err["type"], err
    return err


def test_ask_returns_answer_dict_and_cleans_temp_files(video):
    with client_for() as c:
        r = c.post("/v1/ask", files=upload(video), data={"question": "what moves?", "keep_ratio": "0.5", "fps": "4"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"] and body["stats"]["budget"] == "keep_ratio=0.5"
        assert body["stats"]["tokens_after"] == len(body["kept"]) < body["stats"]["tokens_before"]
        assert (body["stats"]["dropped"], body["stats"]["attention"]) == ("absorb", "proportional")  # the defaults
        assert served_files(c.app) == []
        r = c.post("/v1/ask", files=upload(video), data={"question": "what moves?", "strategy": "codec", "keep_ratio": "0.5",
                                                          "fps": "4", "dropped": "drop", "attention": "plain"})
        s = r.json()["stats"]
        assert (s["dropped"], s["attention"]) == ("drop", "plain"), s  # the form's options reached the engine
        err = assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q", "attention": "loud"}), 422)
        assert "attention" in err["message"]


@pytest.mark.parametrize("case", ["zero-byte.mp4", "random.mp4", "truncated.mp4", "text.mp4", "audio-only.mp4"])
def test_bad_uploads_get_json_4xx_and_server_stays_up(video, tmp_path, case):
    path, statuses = bad_files(tmp_path, video)[case]
    engine = StandInEngine()
    with client_for(engine) as c:
        r = c.post("/v1/ask", files=upload(path, case), data={"question": "q"})
        assert r.status_code in statuses, r.text
        assert_error(r, r.status_code)
        assert case in r.json()["error"]["message"]  # the message names the file
        r = c.post("/v1/files", files={"file": (case, path.read_bytes(), "video/mp4")})
        assert r.status_code in statuses, r.text
        assert engine.calls == 0  # refused before any compute
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.post("/v1/ask", files=upload(video), data={"question": "q"}).status_code == 200
        assert served_files(c.app) == []


def test_oversize_upload_is_413_both_by_header_and_by_stream(video):
    with client_for(max_upload_mb=0.5) as c:
        big = b"\0" * (1024 * 1024)  # past the body limit (0.5 MiB * 4/3 + form overhead)
        assert_error(c.post("/v1/ask", files={"video": ("big.mp4", big, "video/mp4")}, data={"question": "q"}), 413)

        # Chunked body with no Content-Length: refused while streaming in.
        def chunks():
            for _ in range(16):
                yield b"x" * (128 * 1024)

        r = c.post("/v1/files", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
        assert_error(r, 413)
        # Under the body limit but over the file limit: the file check answers.
        mid = b"\0" * (600 * 1024)
        err = assert_error(c.post("/v1/ask", files={"video": ("mid.mp4", mid, "video/mp4")}, data={"question": "q"}), 413)
        assert "mid.mp4" in err["message"]
        assert c.get("/healthz").status_code == 200
        assert served_files(c.app) == []


def test_limits_and_options_are_422_with_the_reason(video):
    with client_for(max_frames=16, max_duration_s=0.5) as c:
        err = assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q", "max_frames": "17"}), 422)
        assert "max_frames" in err["message"]
    with client_for(max_duration_s=0.5) as c:
        err = assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q"}), 422)
        assert "0.5 s" in err["message"]
    with client_for(max_pixels=64 * 64) as c:
        err = assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q"}), 422)
        assert "112x84" in err["message"]
    with client_for() as c:
        assert "keep_ratio" in assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q", "keep_ratio": "2"}), 422)["message"]
        assert_error(c.post("/v1/ask", files=upload(video), data={"question": "   "}), 422)
        assert_error(c.post("/v1/ask", data={"question": "no video"}), 422)
        assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q", "keep_ratio": "abc"}), 422)


def test_api_key_required_when_set(video):
    with client_for(api_key="s3cret") as c:
        assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q"}), 401)
        assert_error(c.get("/v1/files", headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(c.post("/v1/chat/completions", json=chat_body("file-x")), 401)
        ok = c.post("/v1/ask", files=upload(video), data={"question": "q"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text
        assert c.get("/v1/files", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_file_urls_only_inside_allowed_dir(video, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    inside = media / "clip.mp4"
    inside.write_bytes(video.read_bytes())
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(video.read_bytes())
    (media / "link.mp4").symlink_to(secret)
    with client_for(allowed_media_dir=media) as c:
        r = c.post("/v1/chat/completions", json=chat_body(inside.as_uri()))
        assert r.status_code == 200, r.text
        for url in (secret.as_uri(), (media / "link.mp4").as_uri(), f"file://{media}/../secret.mp4", "file:///etc/passwd"):
            err = assert_error(c.post("/v1/chat/completions", json=chat_body(url)), 403)
            assert "outside" in err["message"]
        assert_error(c.post("/v1/chat/completions", json=chat_body((media / "nope.mp4").as_uri())), 404)
        assert_error(c.post("/v1/chat/completions", json=chat_body("http://127.0.0.1:9/x.mp4")), 403)
    with client_for() as c:  # no allowed dir: file:// is off
        assert_error(c.post("/v1/chat/completions", json=chat_body(inside.as_uri())), 403)


def test_chat_completions_with_data_url_and_file_id(video):
    data_url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    with client_for() as c:
        r = c.post("/v1/chat/completions", json=chat_body(data_url, vidsieve={"keep_ratio": 0.5}, max_tokens=8))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        usage = body["usage"]
        assert usage["visual_tokens_after"] < usage["visual_tokens_before"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

        file_id = c.post("/v1/files", files={"file": ("square.mp4", video.read_bytes(), "video/mp4")}).json()["id"]
        parts = {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": file_id}},
                                                           {"type": "text", "text": "q"}]}]}
        assert c.post("/v1/chat/completions", json=parts).status_code == 200
        assert c.get(f"/v1/files/{file_id}").json()["bytes"] == video.stat().st_size
        assert c.delete(f"/v1/files/{file_id}").json()["deleted"] is True
        assert_error(c.post("/v1/chat/completions", json=chat_body(file_id)), 404)

        assert_error(c.post("/v1/chat/completions", json=chat_body("data:video/mp4;base64,@@@")), 422)
        assert_error(c.post("/v1/chat/completions", json=chat_body(data_url, vidsieve={"bogus": 1})), 422)
        two_turns = chat_body(data_url)
        two_turns["messages"].insert(0, {"role": "system", "content": "be brief"})
        assert "roles" in assert_error(c.post("/v1/chat/completions", json=two_turns), 422)["message"]
        assert_error(c.post("/v1/chat/completions", json=chat_body(data_url, model="gpt-4o")), 404)
        assert c.get("/v1/models").json()["data"][0]["id"] == "stand-in"
        assert c.post("/v1/chat/completions", json=chat_body(data_url, model="stand-in")).status_code == 200
        assert_error(c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}), 422)
        assert served_files(c.app) == []


def test_chat_completions_stream_is_openai_sse(video):
    data_url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    with client_for() as c:
        body = chat_body(data_url, stream=True, stream_options={"include_usage": True}, vidsieve={"keep_ratio": 0.25})
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
        assert lines[-1] == "data: [DONE]"
        events = [json.loads(ln[6:]) for ln in lines[:-1]]
        assert all(e["object"] == "chat.completion.chunk" for e in events)
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]][0]
        assert text.strip() == final["vidsieve"]["answer"].strip()
        assert events[-1]["choices"] == [] and events[-1]["usage"]["visual_tokens_after"] == len(final["vidsieve"]["kept"])


def test_errors_are_json_everywhere(video):
    with client_for() as c:
        assert_error(c.get("/nope"), 404)
        assert_error(c.put("/v1/ask"), 405)
        assert_error(c.get("/v1/files/file-doesnotexist"), 404)

    class Broken(StandInEngine):
        def ask(self, *a, **k):
            raise RuntimeError("boom at /secret/path")

    with client_for(Broken()) as c:
        r = c.post("/v1/ask", files=upload(video), data={"question": "q"})
        err = assert_error(r, 500)
        assert "/secret/path" not in err["message"] and "Traceback" not in r.text


def test_file_store_caps_and_expiry(video):
    with client_for(max_files=2) as c:
        ids = [c.post("/v1/files", files={"file": ("a.mp4", video.read_bytes(), "video/mp4")}).json()["id"] for _ in range(2)]
        assert_error(c.post("/v1/files", files={"file": ("a.mp4", video.read_bytes(), "video/mp4")}), 507)
        c.delete(f"/v1/files/{ids[0]}")
        assert c.post("/v1/files", files={"file": ("a.mp4", video.read_bytes(), "video/mp4")}).status_code == 200
        store = c.app.state.files
        store._clock = lambda: 4e9  # far past every expiry
        assert c.get("/v1/files").json()["data"] == []
        assert list(store.root.iterdir()) == []


def test_full_queue_answers_429_with_retry_after_and_healthz_stays_responsive(video):
    gate = threading.Event()
    engine = StandInEngine(gate=gate)
    with client_for(engine, workers=1, queue_size=1, max_upload_mb=1) as c:
        results = []

        def ask():
            results.append(c.post("/v1/ask", files=upload(video), data={"question": "q"}))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        for _ in range(200):  # until both are admitted (one running, one waiting)
            if c.app.state.queue.running == 1 and c.app.state.queue.waiting == 1:
                break
            threading.Event().wait(0.05)
        assert c.get("/healthz").status_code == 200  # the event loop is free while the worker computes
        r = c.post("/v1/ask", files=upload(video), data={"question": "q"})
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        assert "vidsieve_queue_waiting 1.0" in c.get("/metrics").text
        # Refused before the body is read: an over-limit upload gets 429, not 413.
        huge = c.post("/v1/ask", files={"video": ("huge.mp4", b"\0" * (3 * 1024 * 1024), "video/mp4")}, data={"question": "q"})
        assert_error(huge, 429)
        gate.set()
        for t in threads:
            t.join(30)
        assert [x.status_code for x in results] == [200, 200]
        assert served_files(c.app) == []


def test_timeout_is_504(video):
    with client_for(StandInEngine(delay_s=1.5), timeout_s=0.3) as c:
        assert_error(c.post("/v1/ask", files=upload(video), data={"question": "q"}), 504)


def test_metrics_count_requests_and_stages(video):
    with client_for() as c:
        c.post("/v1/ask", files=upload(video), data={"question": "q"})
        c.get("/v1/files/file-missing")
        text = c.get("/metrics").text
    assert 'vidsieve_http_requests_total{route="/v1/ask",status="200"} 1.0' in text
    assert 'vidsieve_http_requests_total{route="/v1/files/{file_id}",status="404"} 1.0' in text
    assert 'vidsieve_stage_seconds_count{stage="encode"} 1.0' in text
    assert "vidsieve_visual_tokens_kept_total" in text


def test_settings_refuse_public_host_without_key(monkeypatch):
    from encoders.errors import BadRequest

    with pytest.raises(BadRequest, match="api-key"):
        Settings(host="0.0.0.0").check_exposure()
    Settings(host="0.0.0.0", api_key="k").check_exposure()
    Settings(host="0.0.0.0", allow_insecure_public=True).check_exposure()
    Settings(host="::1").check_exposure()
    monkeypatch.setenv("VIDSIEVE_API_KEY", "from-env")
    assert Settings(host="0.0.0.0").api_key == "from-env"


def test_abandoned_request_is_dropped_from_the_queue(video):
    """A client that hangs up while its request waits for a worker costs no compute."""
    import httpx

    from tests.serve_support import LiveServer

    gate = threading.Event()
    engine = StandInEngine(gate=gate)
    app = create_app(Settings(workers=1, queue_size=2), engine=engine)
    with LiveServer(app) as server:
        first = threading.Thread(target=lambda: httpx.post(server.url + "/v1/ask", files=upload(video), data={"question": "q"}, timeout=30))
        first.start()
        for _ in range(200):
            if engine.calls == 1:
                break
            threading.Event().wait(0.05)
        with pytest.raises(httpx.ReadTimeout):  # waits behind the first, then hangs up
            httpx.post(server.url + "/v1/ask", files=upload(video), data={"question": "q"}, timeout=1.0)
        for _ in range(100):  # the server notices within its poll interval
            if app.state.queue.waiting == 0:
                break
            threading.Event().wait(0.05)
        assert app.state.queue.waiting == 0
        gate.set()
        first.join(30)
        assert engine.calls == 1  # the abandoned one never ran
        assert 'status="499"' in httpx.get(server.url + "/metrics").text

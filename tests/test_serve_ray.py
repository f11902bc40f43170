"""`vidsieve serve --ray ADDRESS`: the service with its stages in Ray actors (pipeline/ray_stages.py) on a
real token-auth cluster (`ray start --head` subprocess) answers what the in-process engine answers."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from pipeline.options import AskOptions
from serve.app import create_app
from serve.settings import Settings
from tests.fixtures.ray_cluster import RayHead, client_of
from tests.serve_support import make_video, shared_tiny_engine


def test_service_on_ray_stages_matches_in_process(tmp_path):
    import ray

    engine, model_dir = shared_tiny_engine()
    video = make_video(tmp_path / "square.mp4", num_frames=16, fps=8.0, width=224, height=168)
    options = {"strategy": "codec", "keep_ratio": 0.25, "fps": 4.0, "max_new_tokens": 4}
    expected = engine.ask(str(video), "What moves?", AskOptions(**options))
    with RayHead(num_cpus=2) as head, client_of(head):
        try:
            app = create_app(Settings(ray_address=head.address, model_dir=str(model_dir), timeout_s=300))
            with TestClient(app) as c:
                deadline = time.monotonic() + 300
                while c.get("/readyz").status_code != 200:
                    assert time.monotonic() < deadline, c.get("/readyz").json()
                    time.sleep(0.5)
                r = c.post("/v1/ask", files={"video": ("square.mp4", video.read_bytes(), "video/mp4")},
                           data={"question": "What moves?", **{k: str(v) for k, v in options.items()}})
                assert r.status_code == 200, r.text
                got = r.json()
                assert got["output_token_ids"] == expected["output_token_ids"] and got["kept"] == expected["kept"]
                file_id = c.post("/v1/files", files={"file": ("square.mp4", video.read_bytes(), "video/mp4")}).json()["id"]
                body = {"stream": True, "vidsieve": options,
                        "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": file_id}},
                                                                  {"type": "text", "text": "What moves?"}]}]}
                with c.stream("POST", "/v1/chat/completions", json=body) as s:
                    events = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
                final = [e for e in events if e.get("vidsieve")]
                assert final and final[0]["vidsieve"]["answer"] == expected["answer"], events[-3:]
        finally:
            ray.shutdown()


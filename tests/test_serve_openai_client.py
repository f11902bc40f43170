"""The official `openai` Python client against a real vidsieve server and engine (tiny random checkpoint):
files.create, chat.completions.create with a video part and vidsieve options in extra_body, plain and
streamed, models.list, and the client's own exception types for vidsieve's JSON errors."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

from serve.app import create_app  # noqa: E402
from serve.settings import Settings  # noqa: E402
from tests.serve_support import LiveServer, make_video, shared_tiny_engine  # noqa: E402


def test_openai_client_plain_stream_files_and_errors(tmp_path):
    engine, _ = shared_tiny_engine()
    video = make_video(tmp_path / "square.mp4", num_frames=16, fps=8.0, width=224, height=168)
    with LiveServer(create_app(Settings(api_key="sk-test"), engine=engine)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == [engine.model_name]
        with open(video, "rb") as f:
            uploaded = client.files.create(file=f, purpose="user_data")
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": uploaded.id}},
                                                 {"type": "text", "text": "What moves?"}]}]
        extra = {"vidsieve": {"strategy": "codec", "keep_ratio": 0.25, "fps": 4.0}}
        plain = client.chat.completions.create(model=engine.model_name, messages=messages, max_tokens=5, extra_body=extra)
        assert plain.choices[0].message.role == "assistant"
        assert plain.usage.completion_tokens == len(plain.model_extra["vidsieve"]["output_token_ids"])
        assert plain.usage.model_extra["visual_tokens_after"] < plain.usage.model_extra["visual_tokens_before"]

        stream = client.chat.completions.create(model=engine.model_name, messages=messages, max_tokens=5, extra_body=extra,
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain.choices[0].message.content
        assert chunks[-1].usage.total_tokens == plain.usage.total_tokens

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.UnprocessableEntityError) as bad:
            client.chat.completions.create(model=engine.model_name, messages=messages, extra_body={"vidsieve": {"keep_ratio": 3}})
        assert "keep_ratio" in bad.value.message
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=messages)

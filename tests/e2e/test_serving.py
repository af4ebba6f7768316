"""The real vLLM server with the tiny MedGemma-architecture model: chat over the OpenAI API."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.e2e.launcher import LiveServer
from tests.images import chest_like_png, data_url

SYSTEM = {"role": "system", "content": "You are an expert radiologist."}


def user(text: str, n_images: int = 0) -> dict:
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [
        {"type": "image_url", "image_url": {"url": data_url(chest_like_png(seed=i))}}
        for i in range(n_images)
    ]
    return {"role": "user", "content": parts}


@pytest.fixture(scope="module")
def openai_client(server: LiveServer) -> openai.OpenAI:
    return server.get_client()


def chat(client: openai.OpenAI, server: LiveServer, messages: list[dict], **kw):
    return client.chat.completions.create(
        model=server.model,
        messages=messages,
        max_tokens=kw.pop("max_tokens", 16),
        temperature=0,
        **kw,
    )


def test_models_lists_the_served_model(openai_client, server: LiveServer) -> None:
    ids = [m.id for m in openai_client.models.list().data]
    assert ids == [server.model], ids
    assert "random" in server.model  # the stand-in says what it is


def test_models_publish_the_servers_limits(server: LiveServer) -> None:
    """The guard adds the config's image limit to vLLM's model card, which carries
    max_model_len itself (cpu-tiny: 2 images, 4096 tokens); the body's length is right."""
    with server.get_http_client() as http:
        resp = http.get("/v1/models")
    assert resp.status_code == 200, resp.text
    assert int(resp.headers["content-length"]) == len(resp.content), resp.headers
    (entry,) = resp.json()["data"]
    assert entry["id"] == server.model, entry
    assert (entry["max_images_per_prompt"], entry["max_model_len"]) == (2, 4096), entry


def test_image_and_text_uses_256_image_tokens(openai_client, server: LiveServer) -> None:
    text_only = chat(openai_client, server, [SYSTEM, user("Describe this X-ray")])
    with_image = chat(openai_client, server, [SYSTEM, user("Describe this X-ray", 1)])
    assert with_image.choices[0].finish_reason in ("stop", "length")
    assert with_image.usage is not None and text_only.usage is not None
    extra = with_image.usage.prompt_tokens - text_only.usage.prompt_tokens
    # 256 soft tokens plus <start_of_image>/<end_of_image> and the newlines around them.
    assert 256 <= extra <= 264, (with_image.usage, text_only.usage)
    assert with_image.usage.completion_tokens == 16, with_image.usage


def test_text_only_chat(openai_client, server: LiveServer) -> None:
    r = chat(openai_client, server, [user("Summarize: no acute cardiopulmonary abnormality.")])
    assert r.choices[0].message.content, r
    assert r.usage is not None and r.usage.prompt_tokens < 64, r.usage


def test_streaming_matches_non_streaming(openai_client, server: LiveServer) -> None:
    messages = [SYSTEM, user("Describe this X-ray", 1)]
    whole = chat(openai_client, server, messages)
    stream = chat(
        openai_client, server, messages, stream=True, stream_options={"include_usage": True}
    )
    deltas, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(deltas) > 1, deltas
    assert "".join(deltas) == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage


def test_two_images_in_one_message(openai_client, server: LiveServer) -> None:
    one = chat(openai_client, server, [user("Compare these", 1)])
    two = chat(openai_client, server, [user("Compare these", 2)])
    extra = two.usage.prompt_tokens - one.usage.prompt_tokens
    assert 256 <= extra <= 264, (one.usage, two.usage)


def test_over_the_image_limit_is_refused_with_4xx(openai_client, server: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat(openai_client, server, [user("Compare these", 3)])
    assert err.value.status_code == 400
    assert "image" in str(err.value).lower(), str(err.value)
    # ...and the server goes on serving.
    assert chat(openai_client, server, [user("Describe this X-ray", 1)]).choices


def test_32_concurrent_requests_all_succeed(server: LiveServer) -> None:
    async def run() -> list:
        async with server.get_async_client() as client:
            return await asyncio.gather(
                *[
                    client.chat.completions.create(
                        model=server.model,
                        messages=[user(f"Describe study {i}", 1)],
                        max_tokens=8,
                        temperature=0,
                    )
                    for i in range(32)
                ],
                return_exceptions=True,
            )

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert all(r.usage.completion_tokens == 8 for r in results), [r.usage for r in results]


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions"])
def test_api_key_is_enforced(server: LiveServer, path: str) -> None:
    body = {"model": server.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with server.get_http_client(auth=False) as http:

        def call(headers: dict) -> httpx.Response:
            if path.endswith("completions"):
                return http.post(path, json=body, headers=headers)
            return http.get(path, headers=headers)

        assert call({}).status_code == 401
        assert call({"Authorization": "Bearer wrong"}).status_code == 401
        ok = call(server.auth)
        assert ok.status_code == 200, ok.text
        assert http.get("/health").status_code == 200  # probes need no key


def test_sdk_without_key_gets_authentication_error(server: LiveServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        server.get_client(api_key="wrong").models.list()

"""serve.guard.middleware's pure parts (media-URL policy, key check, size header) and the
security/reliability fields of the deployment config as they reach vLLM."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from serve.command.argv import NO_REMOTE_MEDIA, check_vllm_argv, to_server_env, to_vllm_argv
from serve.config.deployment import ConfigError, load_config
from serve.guard.middleware import authorized, body_problem, content_length, media_urls, url_problem
from serve.launch.preflight import preflight
from tests.conftest import REPO

CPU_TINY = REPO / "configs" / "deployments" / "cpu-tiny.yaml"


def chat_body(url: str) -> bytes:
    parts = [{"type": "text", "text": "see https://example.org in text"}]
    parts.append({"type": "image_url", "image_url": {"url": url}})
    return json.dumps({"messages": [{"role": "user", "content": parts}]}).encode()


def test_media_urls_finds_chat_responses_and_anthropic_shapes() -> None:
    doc = {
        "messages": [{"content": [{"type": "image_url", "image_url": {"url": "a"}}]}],
        "input": [{"type": "input_image", "image_url": "b"}],
        "anthropic": [{"type": "image", "source": {"type": "url", "url": "c"}}],
        "text": "http://not-a-media-url",
    }
    assert sorted(media_urls(doc)) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("url", "domains", "local", "says"),
    [
        ("file:///etc/passwd", set(), False, "file:// image URLs are refused"),
        ("FILE:///etc/passwd", set(), False, "file:// image URLs are refused"),
        ("http://10.0.0.1/x.png", set(), False, "remote image URLs are disabled"),
        ("https://evil.example/x.png", {"pacs.example"}, False, "not in this server's allowed"),
        ("https://PACS.example/x.png", {"pacs.example"}, False, None),
        ("file:///data/x.png", set(), True, None),  # vLLM checks the folder
        ("data:image/png;base64,AAAA", set(), False, None),
        ("ftp://host/x.png", set(), False, None),  # vLLM answers 400 itself
    ],
)
def test_url_problem(url: str, domains: set[str], local: bool, says: str | None) -> None:
    problem = url_problem(url, frozenset(domains), local)
    assert (problem is None) if says is None else (says in (problem or "")), problem


def test_body_problem_only_looks_at_media_urls() -> None:
    assert body_problem(chat_body("data:image/png;base64,AAAA"), frozenset(), False) is None
    assert "remote" in (body_problem(chat_body("http://x/y.png"), frozenset(), False) or "")
    assert body_problem(b'{"broken json ://', frozenset(), False) is None  # vLLM's 400


def test_key_check_and_content_length() -> None:
    expected = hashlib.sha256(b"k").digest()
    assert authorized([(b"authorization", b"Bearer k")], expected)
    assert authorized([(b"Authorization", b"bearer k")], expected)
    assert not authorized([(b"authorization", b"Bearer kk")], expected)
    assert not authorized([(b"authorization", b"k")], expected)
    assert not authorized([], expected)
    assert content_length([(b"content-length", b"12")]) == 12
    assert content_length([(b"content-length", b"x")]) is None


def test_defaults_reach_vllm_as_its_own_settings() -> None:
    cfg = load_config(CPU_TINY)
    argv = to_vllm_argv(cfg, "/m")
    env = to_server_env(cfg, {})
    i = argv.index("--allowed-media-domains")
    assert argv[i + 1] == NO_REMOTE_MEDIA and NO_REMOTE_MEDIA.endswith(".invalid")
    assert argv[argv.index("--shutdown-timeout") + 1] == "30"
    assert argv[argv.index("--middleware") + 1] == "serve.guard.middleware.RequestGuard"
    assert "--ssl-certfile" not in argv and "--allowed-local-media-path" not in argv
    assert env["VLLM_MAX_IMAGE_PIXELS"] == "40000000"
    assert env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0"
    assert env["MEDGEMMA_GUARD_MEDIA_DOMAINS"] == "" and env["MEDGEMMA_GUARD_LOCAL_MEDIA"] == "0"


def test_tls_media_and_queue_settings_pass_vllms_parser(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    cfg = load_config(
        CPU_TINY,
        {
            "ssl_certfile": str(cert),
            "ssl_keyfile": str(key),
            "allowed_media_domains": ["pacs.example", "images.example"],
            "allowed_local_media_path": str(tmp_path),
            "max_num_queued_reqs": 128,
            "drain_timeout_s": 7.5,
        },
    )
    argv = to_vllm_argv(cfg, "/m")
    i = argv.index("--allowed-media-domains")
    assert argv[i + 1 : i + 3] == ["pacs.example", "images.example"]
    assert argv[argv.index("--ssl-certfile") + 1] == str(cert)
    assert argv[argv.index("--max-num-queued-reqs") + 1] == "128"
    assert argv[argv.index("--shutdown-timeout") + 1] == "8"
    assert to_server_env(cfg, {})["MEDGEMMA_GUARD_LOCAL_MEDIA"] == "1"
    assert check_vllm_argv(argv) is None


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"ssl_certfile": "/etc/hostname"}, "set both `ssl_certfile` and `ssl_keyfile`"),
        ({"allowed_media_domains": ["https://pacs.example"]}, "is not a host name"),
        ({"max_image_pixels": 0}, "max_image_pixels"),
        ({"max_num_queued_reqs": 0}, "max_num_queued_reqs"),
    ],
)
def test_bad_settings_are_named(overrides: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(CPU_TINY, overrides)
    assert says in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"ssl_certfile": "/no/c.pem", "ssl_keyfile": "/no/k.pem"}, "ssl_certfile: '/no/c.pem'"),
        ({"allowed_local_media_path": "/no/such/folder"}, "is not a folder"),
    ],
)
def test_missing_files_are_named_by_the_preflight(overrides: dict, says: str) -> None:
    cfg = load_config(CPU_TINY, overrides)  # the schema reads no file: plan/render load it
    with pytest.raises(ConfigError) as caught:
        preflight(cfg, str(CPU_TINY))
    assert says in str(caught.value), str(caught.value)


def test_in_flight_bound_answers_503_before_the_app_sees_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The downstream app is a stand-in (this test is about the guard, not vLLM): it holds
    each request until released, so two are in flight when the third arrives."""
    import asyncio

    from serve.guard.middleware import RequestGuard

    monkeypatch.setenv("MEDGEMMA_GUARD_MAX_IN_FLIGHT", "2")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    release, seen = asyncio.Event(), []

    async def app(scope, receive, send) -> None:
        seen.append((await receive())["body"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(app)

    async def request(i: int) -> int:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b'{"i": %d}' % i, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        await guard(scope, receive, send)
        return sent[0]["status"]

    async def scenario() -> list[int]:
        first = [asyncio.create_task(request(i)) for i in range(2)]
        await asyncio.sleep(0.05)
        third = await request(2)
        release.set()
        return [*(await asyncio.gather(*first)), third]

    assert asyncio.run(scenario()) == [200, 200, 503]
    assert seen == [b'{"i": 0}', b'{"i": 1}'] and guard.in_flight == 0

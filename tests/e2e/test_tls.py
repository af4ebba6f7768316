"""TLS from the config: `ssl_certfile`/`ssl_keyfile` make `python -m serve` serve HTTPS.

The server is the session's `launcher` (tests/e2e/conftest.py), its certificate self-signed,
made there; the launcher's own readiness check
(ServerProcess) already had to pass over HTTPS before these tests run.
"""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.e2e.launcher import LiveServer

pytestmark = pytest.mark.slow


def test_launcher_prints_an_https_url(launcher: LiveServer) -> None:
    assert launcher.root_url.startswith("https://127.0.0.1:"), launcher.root_url


def test_openai_client_over_https_verifying_the_certificate(launcher: LiveServer) -> None:
    with launcher.get_client() as client:  # trusts the server's own certificate
        reply = client.chat.completions.create(
            model=launcher.model,
            messages=[{"role": "user", "content": "Describe this X-ray"}],
            max_tokens=2,
        )
    assert reply.usage is not None and reply.usage.completion_tokens >= 1, reply


def test_health_over_https_and_key_still_required(launcher: LiveServer) -> None:
    with launcher.get_http_client(auth=False) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/v1/models").status_code == 401


def test_plain_http_is_not_served(launcher: LiveServer) -> None:
    url = launcher.url_for("health").replace("https://", "http://")
    with pytest.raises(httpx.HTTPError) as caught:
        r = httpx.get(url, timeout=10)
        pytest.fail(f"plain HTTP answered {r.status_code}: {r.text[:200]}")
    assert isinstance(caught.value, httpx.TransportError), repr(caught.value)


def test_client_that_does_not_trust_the_certificate_is_refused(launcher: LiveServer) -> None:
    with pytest.raises(httpx.ConnectError) as caught:
        httpx.get(launcher.url_for("health"), verify=ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value), str(caught.value)

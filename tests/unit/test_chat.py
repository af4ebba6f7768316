"""clients.chat without a server: settings precedence, and a refused connection."""

from __future__ import annotations

import openai
import pytest

from clients.chat import complete, load_settings, make_client, resolve_model
from clients.errors import ServerUnreachableError
from serve.launch.process import free_port


def test_arguments_win_over_environment_which_wins_over_defaults():
    env = {"MEDGEMMA_BASE_URL": "http://h:1/v1", "MEDGEMMA_API_KEY": "k", "MEDGEMMA_MODEL": "m"}
    s = load_settings(environ=env)
    assert (s.base_url, s.api_key, s.model) == ("http://h:1/v1", "k", "m")
    s = load_settings(base_url="http://x/v1", model="n", timeout_s=5, environ=env)
    assert (s.base_url, s.api_key, s.model, s.timeout_s) == ("http://x/v1", "k", "n", 5)
    d = load_settings(environ={})
    assert (d.base_url, d.model, d.max_retries) == ("http://127.0.0.1:8000/v1", None, 2)


def test_bad_environment_values_are_named():
    with pytest.raises(ValueError, match="timeout_s"):
        load_settings(environ={"MEDGEMMA_TIMEOUT": "soon"})


def test_connection_refused_names_the_url_and_how_to_start_the_server():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = make_client(load_settings(base_url=url, model="m", max_retries=0, environ={}))
    with pytest.raises(ServerUnreachableError) as err:
        complete(client, [{"role": "user", "content": "hi"}])
    assert url in str(err.value) and "make serve" in str(err.value), str(err.value)
    assert isinstance(err.value, openai.APIConnectionError)


def test_the_settings_model_travels_with_the_client_without_asking_the_server():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: asking would fail
    client = make_client(load_settings(base_url=url, model="from-settings", environ={}))
    assert resolve_model(client) == "from-settings"
    assert resolve_model(client, "explicit") == "explicit"

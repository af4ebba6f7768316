"""clients.chat without vLLM: settings from arguments and MEDGEMMA_* variables, a refused
connection, and MedGemmaClient against a small fake OpenAI-compatible HTTP server
(model resolution, typed answers, streams)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from clients.__main__ import main as cli_main
from clients.chat import ClientSettings, MedGemmaClient
from clients.errors import SchemaError, ServerUnreachableError
from clients.tasks import ConsistencyCheck
from serve.process import free_port
from tests.fake_openai import FakeOpenAI, serve_fake_openai
from tests.images import chest_like_png

IMG = chest_like_png(64)


@pytest.fixture(autouse=True)
def no_medgemma_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the shell's MEDGEMMA_* variables."""
    for name in ("BASE_URL", "API_KEY", "MODEL", "TIMEOUT", "MAX_RETRIES"):
        monkeypatch.delenv(f"MEDGEMMA_{name}", raising=False)


def test_arguments_win_over_environment_which_wins_over_defaults(monkeypatch):
    d = ClientSettings.load()
    assert (d.base_url, d.api_key, d.model, d.timeout, d.max_retries) == (
        "http://127.0.0.1:8000/v1",
        "EMPTY",
        None,
        600.0,
        2,
    )
    for name, value in {"BASE_URL": "http://h:1/v1", "API_KEY": "k", "MODEL": "m"}.items():
        monkeypatch.setenv(f"MEDGEMMA_{name}", value)
    monkeypatch.setenv("MEDGEMMA_TIMEOUT", "7.5")
    s = ClientSettings.load()
    assert (s.base_url, s.api_key, s.model, s.timeout) == ("http://h:1/v1", "k", "m", 7.5)
    s = ClientSettings.load(base_url="http://x/v1", model="n", timeout=5, max_retries=None)
    assert (s.base_url, s.api_key, s.model, s.timeout, s.max_retries) == (
        "http://x/v1",
        "k",
        "n",
        5,
        2,
    )


def test_empty_variables_count_as_unset_and_the_servers_variables_are_not_read(monkeypatch):
    monkeypatch.setenv("MEDGEMMA_MODEL", "")
    monkeypatch.setenv("MEDGEMMA_TIMEOUT", "")
    monkeypatch.setenv("MEDGEMMA_GUARD_MAX_IN_FLIGHT", "4")  # the server's, not the client's
    monkeypatch.setenv("MEDGEMMA_CACHE", "/tmp/cache")
    s = ClientSettings.load()
    assert (s.model, s.timeout) == (None, 600.0)


@pytest.mark.parametrize(
    "variable, value, expect",
    [
        ("MEDGEMMA_TIMEOUT", "abc", "MEDGEMMA_TIMEOUT: Input should be a valid number"),
        ("MEDGEMMA_TIMEOUT", "0", "MEDGEMMA_TIMEOUT: Input should be greater than 0"),
        ("MEDGEMMA_MAX_RETRIES", "-1", "MEDGEMMA_MAX_RETRIES: Input should be greater than"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(monkeypatch, variable, value, expect):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as err:
        ClientSettings.load()
    assert expect in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_bad_argument_is_named_as_the_argument_and_values_are_not_echoed(monkeypatch):
    monkeypatch.setenv("MEDGEMMA_TIMEOUT", "30")
    with pytest.raises(ValueError, match=r"argument timeout: Input should be greater than 0"):
        ClientSettings.load(timeout=-1)
    with pytest.raises(ValueError, match="argument api_key: Input should be a valid string") as e:
        ClientSettings.load(api_key=31415926)
    assert "31415926" not in str(e.value), "the key must not appear in an error"
    with pytest.raises(ValueError, match="argument bogus: Extra inputs are not permitted"):
        ClientSettings.load(bogus=1)


def test_the_cli_reports_a_bad_variable_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MEDGEMMA_TIMEOUT", "abc")
    assert cli_main(["models"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: bad client settings: MEDGEMMA_TIMEOUT: ") and err.count("\n") == 1
    ), err


def test_connection_refused_names_the_url_and_how_to_start_the_server():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = MedGemmaClient(base_url=url, model="m", max_retries=0)
    with pytest.raises(ServerUnreachableError) as err:
        client.complete([{"role": "user", "content": "hi"}])
    assert url in str(err.value) and "make serve" in str(err.value), str(err.value)
    assert isinstance(err.value, openai.APIConnectionError)
    with pytest.raises(ServerUnreachableError, match="make serve"):
        MedGemmaClient(base_url=url, max_retries=0).resolve_model()


def test_the_settings_model_is_used_without_asking_the_server(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: asking would fail
    assert MedGemmaClient(base_url=url, model="from-argument").resolve_model() == "from-argument"
    monkeypatch.setenv("MEDGEMMA_MODEL", "from-env")
    assert MedGemmaClient(base_url=url).resolve_model() == "from-env"


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, type[FakeOpenAI]]]:
    with serve_fake_openai() as server:
        yield server


def test_the_servers_only_model_is_asked_once(fake_openai):
    url, handler = fake_openai
    client = MedGemmaClient(base_url=url, max_retries=0)
    first = client.complete([{"role": "user", "content": "hi"}], max_tokens=5)
    second = client.complete([{"role": "user", "content": "hi"}], max_tokens=5)
    assert first.model == second.model == "medgemma" and first.text == "an answer", first
    assert first.usage == {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
    gets = [path for method, path, _ in handler.seen if method == "GET"]
    assert gets == ["/v1/models"], handler.seen


@pytest.mark.parametrize("models", [["a", "b"], []])
def test_several_or_no_served_models_ask_for_a_choice(fake_openai, models):
    url, handler = fake_openai
    handler.models = models
    with pytest.raises(ValueError, match=f"serves {len(models)} models .*MEDGEMMA_MODEL"):
        MedGemmaClient(base_url=url, max_retries=0).resolve_model()


def test_consistency_sends_the_schema_and_returns_the_typed_answer(fake_openai):
    url, handler = fake_openai
    handler.content = '{"consistent": false, "discrepancies": ["no effusion"], "confidence": 0.8}'
    r = MedGemmaClient(base_url=url, model="m").run_task("consistency", [IMG], report="Effusion.")
    assert r.parsed == ConsistencyCheck(
        consistent=False, discrepancies=["no effusion"], confidence=0.8
    ), r
    sent = handler.seen[-1][2]
    assert sent["response_format"]["json_schema"]["name"] == "ConsistencyCheck", sent.keys()
    assert sent["max_tokens"] == 1024 and sent["temperature"] == 0.0, sent


def test_an_answer_cut_off_by_max_tokens_is_a_schema_error_with_the_raw_text(fake_openai):
    url, handler = fake_openai
    handler.content, handler.finish_reason = '{"consistent": fa', "length"
    client = MedGemmaClient(base_url=url, model="m")
    with pytest.raises(SchemaError, match="does not match ConsistencyCheck") as err:
        client.run_task("consistency", [IMG], report="Normal.", max_tokens=3)
    assert err.value.raw == '{"consistent": fa'
    assert handler.seen[-1][2]["max_tokens"] == 3


def test_sync_and_async_streams_end_with_the_servers_usage(fake_openai):
    url, _ = fake_openai
    client = MedGemmaClient(base_url=url, max_retries=0)
    s = client.stream([{"role": "user", "content": "hi"}], max_tokens=4)
    deltas = list(s)
    assert s.result is not None and "".join(deltas) == s.result.text == " tok" * 4, deltas
    assert s.result.usage["completion_tokens"] == 4 and s.result.finish_reason == "length"

    async def main() -> tuple[list[str], Any]:
        async with MedGemmaClient(base_url=url, max_retries=0) as aclient:
            st = aclient.astream([{"role": "user", "content": "hi"}], max_tokens=3)
            found = [d async for d in st]
            done = await aclient.arun_task("findings", [IMG], max_tokens=3)
            return found, (st.result, done)

    found, (result, done) = asyncio.run(main())
    assert result is not None and "".join(found) == result.text and result.usage, result
    assert done.text == "an answer" and done.model == "medgemma", done

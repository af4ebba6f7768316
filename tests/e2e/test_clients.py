"""clients.* against the real vLLM server (tiny random-weight model): tasks, streaming,
async concurrency, structured output, and the typed errors of bad input."""

from __future__ import annotations

import asyncio

import openai
import pytest
from pydicom.data import get_testdata_file

from clients.chat import ChatResult, MedGemmaClient
from clients.errors import ImageError, SchemaError
from clients.messages import RADIOLOGIST, assistant_turn, build_messages, user_turn
from clients.tasks import ConsistencyCheck
from tests.e2e.launcher import LiveServer
from tests.images import chest_like_png

CT = get_testdata_file("CT_small.dcm", download=False)


def connect(server: LiveServer, **settings: object) -> MedGemmaClient:
    """A client of the test server, whatever MEDGEMMA_* variables the shell has set."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("MEDGEMMA_MODEL", "MEDGEMMA_TIMEOUT", "MEDGEMMA_MAX_RETRIES"):
            env.delenv(name, raising=False)
        return MedGemmaClient(base_url=server.base_url, api_key=server.api_key, **settings)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> MedGemmaClient:
    return connect(server, max_retries=0)


def image_tokens_seen(result: ChatResult, n_images: int) -> bool:
    return result.usage.get("prompt_tokens", 0) >= 256 * n_images


def test_the_model_defaults_to_the_servers_only_model(client, server: LiveServer) -> None:
    assert client.resolve_model() == server.model


@pytest.mark.parametrize("task", ["findings", "summary", "teaching"])
def test_image_tasks(client, task: str) -> None:
    r = client.run_task(task, [chest_like_png(1024), CT], report="Normal chest.", max_tokens=12)
    assert r.text and r.finish_reason in ("stop", "length"), r
    assert image_tokens_seen(r, 2), f"two images should cost >= 512 prompt tokens: {r.usage}"
    assert r.latency_s > 0 and r.usage["completion_tokens"] <= 12, r


def test_interpret_multi_turn_with_history(client) -> None:
    first = client.run_task("interpret", [chest_like_png()], question="What is this?", max_tokens=8)
    turns = [user_turn("What is this?", [chest_like_png()]), assistant_turn(first.text)]
    second = client.run_task(
        "interpret",
        question="Is there an effusion?",
        patient_history="65-year-old smoker, cough for 3 weeks",
        turns=turns,
        max_tokens=8,
    )
    assert second.text and image_tokens_seen(second, 1), second
    assert second.usage["prompt_tokens"] > first.usage["prompt_tokens"], (first.usage, second.usage)


def test_consistency_returns_the_typed_model_through_structured_output(client) -> None:
    r = client.run_task("consistency", [chest_like_png()], report="Right lower lobe pneumonia.")
    assert r.finish_reason == "stop", f"the JSON should close before max_tokens: {r}"
    assert isinstance(r.parsed, ConsistencyCheck), r
    assert 0 <= r.parsed.confidence <= 1
    assert ConsistencyCheck.model_validate_json(r.text) == r.parsed


def test_an_answer_cut_off_before_the_json_closes_is_a_schema_error(client) -> None:
    with pytest.raises(SchemaError, match="does not match ConsistencyCheck") as err:
        client.run_task("consistency", [chest_like_png()], report="Normal.", max_tokens=3)
    assert err.value.raw.startswith("{"), err.value.raw


def test_stream_yields_deltas_then_the_result(client) -> None:
    messages = build_messages("Describe this X-ray", [chest_like_png()], system=RADIOLOGIST)
    s = client.stream(messages, max_tokens=16, temperature=0)
    deltas = list(s)
    assert s.result is not None and len(deltas) > 1, deltas
    assert "".join(deltas) == s.result.text
    assert s.result.usage["completion_tokens"] == 16 and image_tokens_seen(s.result, 1), s.result
    assert s.result.finish_reason == "length", s.result


def test_async_32_concurrent_calls(server: LiveServer) -> None:
    async def main() -> list[ChatResult]:
        async with connect(server) as aclient:
            calls = [
                aclient.arun_task("findings", [chest_like_png(seed=i)], max_tokens=8)
                for i in range(32)
            ]
            return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert len(results) == 32
    bad = [r for r in results if not (r.text and image_tokens_seen(r, 1))]
    assert not bad, bad[:3]


def test_async_stream(server: LiveServer) -> None:
    async def main() -> tuple[list[str], ChatResult | None]:
        async with connect(server) as aclient:
            st = aclient.astream(build_messages("Hi"), max_tokens=8, temperature=0)
            return [d async for d in st], st.result

    deltas, result = asyncio.run(main())
    assert result is not None and "".join(deltas) == result.text and result.usage, result


def test_wrong_api_key_is_the_sdks_authentication_error(server: LiveServer) -> None:
    wrong = MedGemmaClient(base_url=server.base_url, api_key="wrong", model=server.model)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.complete(build_messages("hi"), max_tokens=4)
    assert err.value.status_code == 401


def test_a_400_carries_the_servers_message(client) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.complete(build_messages("hi"), max_tokens=100_000)
    assert "max_tokens" in str(err.value), err.value.body


def test_bad_images_fail_before_any_request(client, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        client.run_task("findings", [notes])
    with pytest.raises(ImageError, match="no pixel data"):
        client.run_task("findings", [get_testdata_file("rtplan.dcm", download=False)])

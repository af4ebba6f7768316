"""serve.auth.audit: what a request and its response give the audit line (numbers only),
and the file it is written to."""

from __future__ import annotations

import json
from pathlib import Path

from serve.auth.audit import AuditLog, UsageTap, record, request_facts


def chat(images: int, max_tokens: int | None = 16) -> bytes:
    parts: list[dict] = [{"type": "text", "text": "secret prompt"}]
    parts += [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}] * images
    body: dict = {"messages": [{"role": "user", "content": parts}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return json.dumps(body).encode()


def test_request_facts_count_images_and_read_max_tokens() -> None:
    facts = request_facts(chat(3, 40))
    assert (facts.images, facts.max_tokens) == (3, 40)
    assert request_facts(chat(0, None)).max_tokens is None
    assert request_facts(b"{not json").images == 0


def test_usage_from_a_json_answer_and_from_a_stream() -> None:
    tap = UsageTap(b"application/json")
    answer = json.dumps({"choices": [], "usage": {"prompt_tokens": 270, "completion_tokens": 9}})
    for i in range(0, len(answer), 7):
        tap.feed(answer[i : i + 7].encode())
    assert tap.done() == (270, 9)
    stream = UsageTap(b"text/event-stream; charset=utf-8")
    events = (
        b'data: {"choices": [{"delta": {"content": "x"}}], "usage": null}\n\n'
        b'data: {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}\n\n'
        b"data: [DONE]\n\n"
    )
    for i in range(0, len(events), 5):
        stream.feed(events[i : i + 5])
    assert stream.done() == (12, 3)
    assert UsageTap(b"text/event-stream").done() is None  # no include_usage: unknown


def test_the_line_has_numbers_and_names_only(tmp_path: Path) -> None:
    line = record(
        time="t",
        request_id="r1",
        service="ris",
        method="POST",
        route="/v1/chat/completions",
        status=200,
        usage=(270, 9),
        images=1,
        latency_s=0.01234,
    )
    assert line["latency_ms"] == 12.3 and line["prompt_tokens"] == 270
    log = AuditLog(tmp_path / "a" / "audit.jsonl", retention_days=2)
    log.write(line)
    log.write({**line, "request_id": "r2"})
    log.close()
    lines = (tmp_path / "a" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == ["r1", "r2"]
    assert log.handler.backupCount == 2 and log.handler.when == "MIDNIGHT"

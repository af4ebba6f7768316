"""One reader for the message in an error body: every shape a server here answers with."""

from __future__ import annotations

import json

import pytest

from benchmarks.runner.records import StreamParser
from clients.error_body import error_message

VLLM_400 = {
    "error": {
        "message": "max_tokens=100000 cannot be greater than max_model_len=4096",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (VLLM_400, "max_tokens=100000 cannot be greater than max_model_len=4096"),
        (
            json.dumps(VLLM_400).encode(),
            "max_tokens=100000 cannot be greater than max_model_len=4096",
        ),
        (VLLM_400["error"], "max_tokens=100000 cannot be greater than max_model_len=4096"),
        ({"error": "Unauthorized"}, "Unauthorized"),
        ("Unauthorized", "Unauthorized"),
        ({"detail": "Not Found"}, "Not Found"),
        (
            b'{"detail": [{"loc": ["body"], "msg": "Field required"}]}',
            '[{"loc": ["body"], "msg": "Field required"}]',
        ),
        (b"upstream connect error\n", "upstream connect error"),
        ({"object": "list", "data": []}, None),
        (b"", None),
        (None, None),
        (b"[1, 2]", "[1, 2]"),
    ],
)
def test_every_body_shape(body: object, expected: str | None) -> None:
    assert error_message(body) == expected


def test_an_error_in_a_stream_fails_the_record_with_its_message() -> None:
    parser = StreamParser(start=0.0, wall_start=0.0)
    parser.feed("data: " + json.dumps(VLLM_400), 0.1)
    record = parser.finish(0.2)
    assert not record.success
    assert record.error == f"server error in stream: {VLLM_400['error']['message']}", record

"""One flat record per request, and the pure parser that builds it from an SSE stream.

The parsing follows vLLM's own benchmark (`vllm/benchmarks/lib/endpoint_request_func.py`,
openai-chat): every `data:` chunk with choices is a token chunk (the first sets TTFT, the
next ones add inter-token latencies, the last one ends the request), the trailing usage
chunk gives the token counts, and a request that never streams a chunk with choices is a
failure. Requests never raise: errors become `success=False` with the error text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clients.error_body import error_message


@dataclass
class RequestRecord:
    """What one request did. Times in seconds; `start_s` is wall-clock (time.time())."""

    start_s: float
    success: bool = False
    error: str = ""
    status: int = 0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    n_images: int = 0
    kind: str = "image"
    level: float = 0.0
    role: str = ""  # first / follow_up / radiograph in a study scenario (prepared.ROLES)
    session: int = -1  # the prepared session it belongs to (-1: none recorded)

    @property
    def end_s(self) -> float:
        return self.start_s + self.latency_s

    @property
    def tpot_s(self) -> float:
        """Time per output token after the first (vLLM's definition; 0 for one token)."""
        if self.ttft_s is None or self.output_tokens <= 1:
            return 0.0
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        return cls(**data)


@dataclass
class StreamParser:
    """Accumulates SSE lines of a streaming chat completion into a RequestRecord.

    `start` and every `now` come from the same monotonic clock (time.perf_counter());
    `wall_start` is time.time() at the start, kept for windows and timelines.
    """

    start: float
    wall_start: float
    n_images: int = 0
    kind: str = "image"
    level: float = 0.0
    role: str = ""
    session: int = -1
    first: float | None = None
    last: float | None = None
    itl: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int | None = None
    finish_reason: str | None = None
    error: str = ""
    done: bool = False

    def feed(self, line: bytes | str, now: float) -> None:
        """One line of the event stream (with or without its newline)."""
        text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()
        if not text.startswith("data:"):
            return  # blank separator, SSE comment (": ping") or other field
        payload = text[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            self.error = self.error or f"malformed stream chunk: {payload[:120]!r}"
            return
        if not isinstance(data, dict):
            self.error = self.error or f"stream chunk is not an object: {payload[:120]!r}"
            return
        if "error" in data:
            msg = error_message(data) or str(data["error"])
            self.error = f"server error in stream: {msg[:300]}"
            return
        if choices := data.get("choices"):
            if self.first is None:
                self.first = now
            else:
                self.itl.append(now - (self.last if self.last is not None else now))
            self.last = now
            reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
            if reason:
                self.finish_reason = reason
        elif usage := data.get("usage"):
            self.output_tokens = usage.get("completion_tokens")
            self.prompt_tokens = usage.get("prompt_tokens") or 0

    def finish(self, now: float, *, status: int = 200, error: str = "") -> RequestRecord:
        """The record: a success only if a token chunk arrived and nothing went wrong."""
        error = error or self.error
        if not error and self.first is None:
            error = "the stream ended without a single token chunk"
        if not error and self.output_tokens is None:
            error = "the stream carried no usage (stream_options.include_usage unsupported?)"
        ended = self.last if (self.last is not None and not error) else now
        return RequestRecord(
            start_s=self.wall_start,
            success=not error,
            error=error,
            status=status,
            ttft_s=None if self.first is None else self.first - self.start,
            itl_s=self.itl,
            latency_s=ended - self.start,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens or 0,
            finish_reason=self.finish_reason,
            n_images=self.n_images,
            kind=self.kind,
            level=self.level,
            role=self.role,
            session=self.session,
        )


def read_records(path: Path) -> list[RequestRecord]:
    """Records from a JSONL file (missing file: none)."""
    if not path.exists():
        return []
    return list(parse_lines(path.read_text().splitlines()))


def parse_lines(lines: Iterable[str]) -> Iterator[RequestRecord]:
    for line in lines:
        if line.strip():
            yield RequestRecord.from_dict(json.loads(line))


def write_records(path: Path, records: Iterable[RequestRecord]) -> None:
    with path.open("w") as f:
        for r in records:
            f.write(r.to_json() + "\n")

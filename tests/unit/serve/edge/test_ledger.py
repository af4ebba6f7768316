"""The edge's audit lines joined (serve.edge.ledger): nginx's line of a request (as its
syslog datagram reads, captured from Debian's nginx 2026-12-07) and the replica's usage
report become one line, whichever comes first; a line whose report never comes is written
without numbers after the wait."""

from __future__ import annotations

import json

from serve.edge.ledger import Ledger, Usage, edge_line, joined, usage_from

TAG = "0123456789abcdef0123456789abcdef"


def line(rid: str = "r1", method: str = "POST", upstream: str = "200", **more: object) -> dict:
    return {
        "time": "2026-12-07T10:46:54+00:00",
        "msec": 1796640414.5,
        "request_id": rid,
        "service": "ris",
        "method": method,
        "route": "/v1/chat/completions",
        "status": 200,
        "latency_s": 0.25,
        "upstream_status": upstream,
        "request_bytes": 2048,
        "response_bytes": 700,
        **more,
    }


def datagram(doc: dict, tag: str = TAG) -> bytes:
    return f"<190>Dec  7 10:46:54 {tag}: {json.dumps(doc)}".encode()


USAGE = Usage(200, 300, 12, 2)


def test_nginx_datagram_with_the_launch_tag_only() -> None:
    assert edge_line(datagram(line()), TAG) == line()
    assert edge_line(datagram(line(), "another_tag"), TAG) is None
    assert edge_line(f"<190>Dec  7 10:46:54 {TAG}: ".encode() + b'{"route":"/v1/aa', TAG) is None
    assert edge_line(f'{{"x": " {TAG}: "}}'.encode(), TAG) is None  # not a syslog header
    assert edge_line(f"<190>Dec  7 10:46:54 {TAG}: [1]".encode(), TAG) is None


def test_a_replicas_report_is_read_strictly() -> None:
    doc = {"request_id": "r1", "service": "ris", "status": 200, "prompt_tokens": 300}
    assert usage_from({**doc, "completion_tokens": 12, "images": 2}) == ("r1", "ris", USAGE)
    assert usage_from(doc) == ("r1", "ris", Usage(200, 300, None, 0))
    assert usage_from({**doc, "service": ""})[1] is None  # type: ignore[index]
    for bad in ([], {"status": 200}, {**doc, "status": "200"}, {**doc, "status": True}):
        assert usage_from(bad) is None, bad
    assert usage_from({**doc, "prompt_tokens": -1})[2].prompt_tokens is None  # type: ignore[index]


def test_the_joined_line_is_the_guards_format_plus_the_edges_fields() -> None:
    out = joined(line(), USAGE)
    assert out == {
        "time": "2026-12-07T10:46:54.250+00:00",  # msec minus the latency: the start
        "request_id": "r1",
        "service": "ris",
        "method": "POST",
        "route": "/v1/chat/completions",
        "status": 200,
        "prompt_tokens": 300,
        "completion_tokens": 12,
        "images": 2,
        "latency_ms": 250.0,
        "upstream_status": "200",
        "request_bytes": 2048,
        "response_bytes": 700,
    }
    bare = joined(line(service=""), None)
    assert bare["service"] is None and bare["prompt_tokens"] is None and bare["images"] is None


def test_the_line_and_the_report_meet_whichever_comes_first() -> None:
    ledger = Ledger(wait_s=2.0, keep_s=60.0)
    assert ledger.line(line("a"), 0.0) == []
    assert ledger.report("a", USAGE, 0.1) == [joined(line("a"), USAGE)]
    assert ledger.report("b", USAGE, 0.2) == []
    assert ledger.line(line("b"), 0.3) == [joined(line("b"), USAGE)]
    assert not ledger.lines and not ledger.reports


def test_a_line_with_no_report_to_wait_for_is_written_at_once() -> None:
    ledger = Ledger()
    for no_report in (line("g", method="GET"), line("d", upstream=""), line("")):
        assert ledger.line(no_report, 0.0) == [joined(no_report, None)]
    assert not ledger.lines


def test_a_report_that_never_comes_and_one_without_a_line() -> None:
    ledger = Ledger(wait_s=2.0, keep_s=60.0)
    assert ledger.line(line("lost"), 0.0) == []
    assert ledger.report("orphan", USAGE, 0.0) == []
    assert ledger.due(1.9) == []
    assert ledger.due(2.0) == [joined(line("lost"), None)]
    assert "orphan" in ledger.reports and ledger.due(60.0) == [] and not ledger.reports
    assert ledger.line(line("w"), 61.0) == []
    assert ledger.drain() == [joined(line("w"), None)] and not ledger.lines

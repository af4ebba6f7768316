"""The edge's audit writer (the I/O shell around serve.edge.ledger), inside the key check.

nginx's lines come as syslog datagrams on 127.0.0.1:PORT over UDP (the key check's port
number; nginx's `access_log syslog:...`), each with the launch's secret tag: a datagram
without it is not nginx's and is dropped. The replicas' reports come from the key check's
`POST /usage`. Complete lines go to the audit file (serve.auth.audit.AuditLog: rotated at
midnight UTC, `retention_days` kept). Lines still waiting when the key check stops are
written without their numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from serve.auth.audit import AuditLog, utc_now
from serve.edge.ledger import Ledger, Usage, edge_line

RECEIVE_BUFFER = 4 * 2**20  # nginx does not retry a datagram the socket had no room for
TICK_S = 0.5


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data)


class AuditWriter:
    """Joins nginx's lines with the replicas' reports and writes one line per request."""

    def __init__(
        self,
        port: int,
        tag: str,
        log: AuditLog,
        ledger: Ledger | None = None,
    ) -> None:
        self.port, self.tag, self.log = port, tag, log
        self.ledger = ledger or Ledger()
        self.transport: asyncio.DatagramTransport | None = None
        self.ticker: asyncio.Task[None] | None = None
        self.unreadable = 0

    async def start(self) -> None:
        """Listen for nginx's datagrams and write overdue lines every TICK_S."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(("127.0.0.1", self.port))
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(self.datagram), sock=sock
        )
        self.ticker = asyncio.create_task(self.tick())

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.write(self.ledger.due(time.monotonic()))

    def datagram(self, data: bytes) -> None:
        line = edge_line(data, self.tag)
        if line is None:
            if f" {self.tag}: ".encode() in data:  # nginx's, cut short: say it happened
                self.unreadable += 1
                self.write([{"time": utc_now(), "unreadable_edge_line": True}])
            return
        self.write(self.ledger.line(line, time.monotonic()))

    def report(self, rid: str, usage: Usage, now: float) -> None:
        self.write(self.ledger.report(rid, usage, now))

    def write(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            self.log.write(line)

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
        if self.transport is not None:
            with contextlib.suppress(OSError):
                self.transport.close()
        self.write(self.ledger.drain())
        self.log.close()

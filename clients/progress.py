"""A rich progress bar for batch runs, on stderr (counts only: no study content)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class BatchProgress:
    """Context manager; `start(total, todo)` and `advance(record)` are the batch callbacks."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.failed = 0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.task_id: Any = None

    def start(self, total: int, todo: int) -> None:
        self.task_id = self.progress.add_task(
            "studies", total=total, completed=total - todo, failed=0
        )

    def advance(self, record: dict[str, Any]) -> None:
        if record.get("status") != "ok":
            self.failed += 1
        if self.task_id is not None:
            self.progress.update(self.task_id, advance=1, failed=self.failed)

    def __enter__(self) -> BatchProgress:
        self.progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

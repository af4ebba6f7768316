"""Resumable batch runs: one task over every study in a folder or a PACS, one JSON line each.

A study is one image file (DICOM or a format Pillow reads) found under the folder, its id
its path relative to the folder (for `lab-report`, a PDF or a page image: one report); or a
study a DICOMweb search found in a PACS (DicomwebStudy), its id its StudyInstanceUID,
fetched when its turn comes. Tasks that need a report read it from a sidecar text file with
the same stem (`case1.dcm` -> `case1.txt`). A comparison (clients.cxr.Compare, `--prior
auto`) sends each PACS study with the patient's most recent earlier study, as `chat --prior
auto` does; a study with none is an error record. Each result is appended to the JSONL
output (clients.batch_records) as soon as it completes, flushed and fsynced, so a killed
run loses at most the requests in flight. A rerun skips studies whose last record
succeeded, retries the failed ones, and tolerates a torn last line. The file is compacted
to one record per study (the last) at the start and end of a run, through an atomic rename.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import openai

from clients.batch_records import JsonlWriter, Record, compact, pending
from clients.boxes import BoxError, parse_boxes
from clients.chat import ChatResult, MedGemmaClient
from clients.cxr import Compare, Localize, localize_request
from clients.cxr_client import AUTO, compare_request
from clients.dicom import DICOM_SUFFIXES, is_dicom_file
from clients.errors import ImageError, PacsError, SchemaError, ServerUnreachableError
from clients.image_input import load_image
from clients.lab_report import LabReportTask
from clients.limits import LimitError, Limits
from clients.prior import BATCH_ADVICE
from clients.study_request import StudyOptions, fetch_request
from clients.tasks import Task, TaskRequest

IMAGE_SUFFIXES = {
    *DICOM_SUFFIXES,
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
}
DOCUMENT_SUFFIXES = {*IMAGE_SUFFIXES, ".pdf"}  # lab reports: PDFs and page images
# Failures that concern one study: recorded, retried on the next run.
STUDY_ERRORS = (ImageError, SchemaError, ValueError, openai.BadRequestError, openai.APITimeoutError)
# Failures that concern the whole run (server down, wrong key or model): stop, record nothing.
FATAL_ERRORS = (
    ServerUnreachableError,
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.NotFoundError,
    PacsError,
    LimitError,  # not one image fits the server: no study will
)

AnyTask = Task | Localize | LabReportTask | Compare


class BatchItem(Protocol):
    """One study of a batch: a stable id (the record's key) and how to build its request."""

    @property
    def id(self) -> str: ...

    def request(
        self, task: Task, *, max_size: int | None, frame: int | None, limits: Limits
    ) -> TaskRequest: ...

    def image(self, frame: int | None) -> np.ndarray:
        """The study's one image, 8-bit (for localization)."""
        ...


@dataclass(frozen=True)
class Study:
    """An image file under the batch folder."""

    id: str  # path relative to the batch folder, POSIX separators
    path: Path

    @property
    def report_path(self) -> Path:
        return self.path.with_suffix(".txt")

    def request(
        self, task: Task, *, max_size: int | None, frame: int | None, limits: Limits
    ) -> TaskRequest:
        report = None
        if task.needs_report:
            if not self.report_path.is_file():
                raise ValueError(
                    f"task {task.name!r} needs a report: none at {self.report_path.name}"
                )
            report = self.report_path.read_text(errors="replace")
        return task.build([self.path], report=report, max_size=max_size, frame=frame)

    def image(self, frame: int | None) -> np.ndarray:
        return np.asarray(load_image(self.path, frame=frame))


@dataclass(frozen=True)
class DicomwebStudy:
    """A study in a PACS, fetched by WADO-RS when its request is built, its series shown by
    its recipe fitted to the client's limits (frame is unused)."""

    id: str  # StudyInstanceUID
    url: str  # the PACS's DICOMweb base URL
    options: StudyOptions = StudyOptions()

    def request(
        self, task: Task, *, max_size: int | None, frame: int | None, limits: Limits
    ) -> TaskRequest:
        options = replace(self.options, max_size=max_size)
        return fetch_request(self.url, self.id, task, options, limits=limits)[0]

    def image(self, frame: int | None) -> np.ndarray:
        from clients.cxr_client import study_radiograph

        return study_radiograph(self.url, self.id, self.options.series_uid)[0].pixels


@dataclass
class BatchSummary:
    total: int
    skipped: int  # already done in an earlier run
    ok: int = 0
    failed: int = 0
    elapsed_s: float = 0.0


def discover(root: Path, *, documents: bool = False) -> list[Study]:
    """Every study under root (recursively, sorted, hidden files skipped); with
    `documents`, PDFs too (lab reports)."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of studies")
    studies = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        known = DOCUMENT_SUFFIXES if documents else IMAGE_SUFFIXES
        if suffix in known or (suffix == "" and is_dicom_file(path)):
            studies.append(Study(rel.as_posix(), path))
    return studies


def ok_record(study: BatchItem, task: AnyTask, result: ChatResult) -> Record:
    rec: Record = {
        "id": study.id,
        "status": "ok",
        "task": task.name,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": result.usage,
        "latency_s": round(result.latency_s, 3),
    }
    if result.parsed is not None:
        rec["parsed"] = result.parsed.model_dump()
    return rec


def error_record(study: BatchItem, task: AnyTask, exc: BaseException) -> Record:
    rec: Record = {
        "id": study.id,
        "status": "error",
        "task": task.name,
        "error_type": type(exc).__name__,
        "error": str(exc),
    }
    if isinstance(exc, (BoxError, SchemaError)):
        rec["text"] = exc.raw  # the answer without usable boxes, or not the schema: kept
    return rec


async def localized(
    client: MedGemmaClient,
    study: BatchItem,
    task: Localize,
    *,
    max_size: int | None,
    frame: int | None,
    max_tokens: int | None,
) -> Record:
    """One localization (clients.cxr): its record carries the boxes in the image's pixels;
    an answer without usable boxes raises BoxError."""
    pixels = await asyncio.to_thread(study.image, frame)
    request, pad = localize_request(
        pixels, task.object_name, max_tokens=max_tokens, max_size=max_size
    )
    result = await client.asend(request)
    boxes = parse_boxes(result.text, pad)
    return {**ok_record(study, task, result), "boxes": [box.as_json() for box in boxes]}


async def lab_reported(
    client: MedGemmaClient,
    study: BatchItem,
    *,
    max_size: int | None,
    max_tokens: int | None,
) -> Record:
    """One lab report (clients.lab_report): a PDF's every page, or one page image; its
    record carries the LabReport in `parsed`. An answer that is not one raises
    LabReportError."""
    if not isinstance(study, Study):
        raise ValueError("--task lab-report reads PDFs and page images from a folder")
    result = await client.aread_lab_report(study.path, max_size=max_size, max_tokens=max_tokens)
    return ok_record(study, LabReportTask(), result)


async def compared(
    client: MedGemmaClient, study: BatchItem, task: Compare, *, limits: Limits, **options: Any
) -> Record:
    """One study with its prior, found by QIDO-RS (clients.cxr_client, as `chat --prior
    auto`): its record names the prior study. None earlier: StudyError (an error record)."""
    if not isinstance(study, DicomwebStudy):
        raise ValueError("--prior auto compares studies in a PACS: give --dicomweb URL")
    what = (study.url, study.id, task.question, AUTO)
    options |= {"limits": limits, "advice": BATCH_ADVICE}
    pair = await asyncio.to_thread(compare_request, *what, **options)
    result = await client.asend(pair.request)
    return {**ok_record(study, task, result), "prior": pair.sent.prior_study}


async def process(
    client: MedGemmaClient,
    study: BatchItem,
    task: AnyTask,
    *,
    max_size: int | None,
    frame: int | None,
    max_tokens: int | None,
    limits: Limits,
) -> Record:
    """One study -> one record. Study-level failures become error records."""
    try:
        if isinstance(task, Localize):
            return await localized(
                client, study, task, max_size=max_size, frame=frame, max_tokens=max_tokens
            )
        if isinstance(task, LabReportTask):
            return await lab_reported(client, study, max_size=max_size, max_tokens=max_tokens)
        if isinstance(task, Compare):
            sizes = {"max_size": max_size, "max_tokens": max_tokens}
            return await compared(client, study, task, limits=limits, **sizes)
        request = await asyncio.to_thread(
            study.request, task, max_size=max_size, frame=frame, limits=limits
        )
        extra = {"max_tokens": max_tokens} if max_tokens else {}
        result = await client.asend(request, **extra)
    except FATAL_ERRORS:
        raise
    except (*STUDY_ERRORS, openai.APIStatusError, openai.APIConnectionError) as exc:
        return error_record(study, task, exc)
    return ok_record(study, task, result)


async def run_batch(
    client: MedGemmaClient,
    root: Path,
    task: Task,
    out: Path,
    **options: Any,
) -> BatchSummary:
    """Run `task` over the files under root that are not done yet (see run_items)."""
    return await run_items(client, discover(root), task, out, **options)


async def run_items(
    client: MedGemmaClient,
    studies: Sequence[BatchItem],
    task: AnyTask,
    out: Path,
    *,
    concurrency: int = 16,
    max_size: int | None = 896,
    frame: int | None = None,
    max_tokens: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> BatchSummary:
    """Run `task` over the studies that are not done yet; see the module doc."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    todo = pending(studies, compact(out))
    summary = BatchSummary(total=len(studies), skipped=len(studies) - len(todo))
    if on_start:
        on_start(len(studies), len(todo))
    limits = Limits()
    if todo:  # the model and its limits, once, before the workers (a dead server stops here)
        limits = await client.alimits()
    t0 = time.perf_counter()
    queue: asyncio.Queue[BatchItem] = asyncio.Queue()
    for s in todo:
        queue.put_nowait(s)
    writer = JsonlWriter(out)

    async def worker() -> None:
        while not queue.empty():
            study = queue.get_nowait()
            rec = await process(
                client,
                study,
                task,
                max_size=max_size,
                frame=frame,
                max_tokens=max_tokens,
                limits=limits,
            )
            writer.write(rec)
            if rec["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
            if on_record:
                on_record(rec)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(todo))):
                group.create_task(worker())
    except BaseExceptionGroup as eg:
        fatal = eg.subgroup(lambda e: isinstance(e, FATAL_ERRORS))
        raise (fatal or eg).exceptions[0] from None
    finally:
        writer.close()
    compact(out)
    summary.elapsed_s = time.perf_counter() - t0
    return summary

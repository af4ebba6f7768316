"""The DICOMweb options of `python -m clients chat` and `batch`: a study from a PACS.

chat --dicomweb URL --study UID [--series UID] [--store-sr] fetches the study (WADO-RS)
and sends its series as slices; with --store-sr the answer goes back into the same study
as a DICOM Structured Report (clients.report_sr, STOW-RS). batch --dicomweb URL
[--modality CT] [--since DATE] searches (QIDO-RS) and runs the task over every study
found, one record per StudyInstanceUID. What was sent (series, slices, window; never a
patient attribute) is printed to stderr.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from pydicom.dataset import Dataset

from clients.batch import DicomwebStudy
from clients.dicomweb import parse_since, search_studies
from clients.messages import RADIOLOGIST
from clients.study import ALLOWED_TAGS, Sent
from clients.study_request import StudyOptions, fetch, request_for, task_request_for
from clients.tasks import TASKS, TaskRequest
from clients.windows import WINDOWS


def add_study_options(p: argparse.ArgumentParser, *, chat: bool) -> None:
    g = p.add_argument_group("DICOMweb (a study from a PACS)")
    g.add_argument("--dicomweb", metavar="URL", help="the PACS's DICOMweb base URL")
    if chat:
        g.add_argument("--study", metavar="UID", help="StudyInstanceUID to fetch (WADO-RS)")
        g.add_argument("--series", metavar="UID", help="the series to send (default: the only one)")
        g.add_argument(
            "--store-sr",
            action="store_true",
            help="store the answer into the study as a DICOM Structured Report (STOW-RS), "
            "referencing the instances sent and saying it is machine-generated",
        )
    else:
        g.add_argument("--modality", help="only studies with this modality (e.g. CT)")
        g.add_argument("--since", metavar="DATE", help="only studies from DATE (YYYY-MM-DD) on")
    g.add_argument("--max-slices", type=int, metavar="N", help="an even sample of N slices")
    g.add_argument(
        "--image-limit",
        type=int,
        metavar="N",
        help="the server's images per prompt (its limit_mm_per_prompt; MEDGEMMA_IMAGE_LIMIT); "
        "default: not known, the server refuses a prompt above it",
    )
    g.add_argument(
        "--window", choices=WINDOWS, help="CT window (default rgb for CT: three windows)"
    )
    g.add_argument(
        "--tags",
        default="",
        metavar="A,B",
        help=f"non-identifying attributes added as text, from: {','.join(ALLOWED_TAGS)}",
    )


def study_options(args: argparse.Namespace, image_limit: int | None) -> StudyOptions:
    """The options from the flags; image_limit is the client's (flag, else variable)."""
    if args.max_slices is not None and args.max_slices < 1:
        raise ValueError(f"--max-slices must be at least 1, not {args.max_slices}")
    return StudyOptions(
        series_uid=getattr(args, "series", None),
        max_slices=args.max_slices,
        image_limit=image_limit,
        window=args.window,
        tags=tuple(t.strip() for t in args.tags.split(",") if t.strip()),
        max_size=args.max_size or None,
    )


def check_chat_flags(args: argparse.Namespace) -> None:
    if not args.dicomweb or not args.study:
        given, needed = ("--dicomweb", "--study") if args.dicomweb else ("--study", "--dicomweb")
        raise ValueError(f"{given} needs {needed}: a study is fetched from a PACS by its UID")
    if args.image:
        raise ValueError("--image and --dicomweb cannot be combined: send one or the other")
    if args.task and TASKS[args.task].needs_report:
        raise ValueError(f"task {args.task!r} needs a report, which a PACS study comes without")


@dataclass(frozen=True)
class StudyChat:
    """What `chat --dicomweb` sends, and what --store-sr needs afterwards."""

    request: TaskRequest
    sent: Sent
    datasets: list[Dataset]


def chat_request(args: argparse.Namespace, image_limit: int | None) -> StudyChat:
    """The request for `chat --dicomweb`; prints what is sent to stderr."""
    check_chat_flags(args)
    options = study_options(args, image_limit)
    system = RADIOLOGIST if args.system is None else args.system
    datasets = fetch(args.dicomweb, args.study, options.series_uid)
    if args.task:
        request, sent = task_request_for(
            TASKS[args.task], datasets, options, max_tokens=args.max_tokens
        )
    else:
        params = {"max_tokens": args.max_tokens} if args.max_tokens else None
        request, sent = request_for(datasets, args.text, options, system=system, params=params)
    print(sent.line(), file=sys.stderr, flush=True)
    return StudyChat(request, sent, datasets)


def store_answer(url: str, chat: StudyChat, answer: str, model: str) -> str:
    """Store `answer` into the study as an SR (built and checked before the one STOW-RS
    request); the line to print. Raises ReportError or PacsError (one line)."""
    from clients.report_sr import build_report_sr, sent_instances, store_sr

    sources = sent_instances(chat.datasets, chat.sent)
    return store_sr(url, build_report_sr(sources, answer, model_name=model)).line()


def batch_items(args: argparse.Namespace, image_limit: int | None) -> list[DicomwebStudy]:
    """The studies a QIDO-RS search finds, for `batch --dicomweb`."""
    if args.folder is not None:
        raise ValueError("give a folder or --dicomweb URL, not both")
    since = parse_since(args.since) if args.since else None
    options = study_options(args, image_limit)
    refs = search_studies(args.dicomweb, args.modality, since)
    print(f"{len(refs)} studies found at {args.dicomweb}", file=sys.stderr, flush=True)
    return [DicomwebStudy(ref.study_uid, args.dicomweb, options) for ref in refs]

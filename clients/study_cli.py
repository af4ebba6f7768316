"""The DICOMweb options of `python -m clients chat` and `batch`: a study from a PACS.

chat --dicomweb URL --study UID [--series UID] [--store-sr] fetches the study (WADO-RS)
and sends its series as slices; with --store-sr the answer goes back into the same study
as a DICOM Structured Report (clients.report_sr, STOW-RS). batch --dicomweb URL
[--modality CT] [--since DATE] searches (QIDO-RS) and runs the task over every study
found, one record per StudyInstanceUID. The series is shown by its recipe (clients.recipes)
fitted to the server's limits (clients.limits); what was sent is printed to stderr, e.g.
`sent 85 of 120 slices (CT, 3 windows)` or `sent 2 of 60 slices (CT, 3 windows): the server
takes at most 2 images per prompt; ...` (never a patient attribute). A whole slide (modality
SM) is sent as tissue patches (clients.slide): `sent 7 of 7 patches (10X); ...`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from clients.batch import DicomwebStudy
from clients.dicomweb import parse_since, search_studies
from clients.limits import Limits
from clients.slide import SlideSent
from clients.slide_client import is_slide_study, level_instance
from clients.study import ALLOWED_TAGS, RECIPE, Sent, check_tags
from clients.study_request import (
    StudyOptions,
    fetch,
    request_for,
    slide_fetch_request,
    task_request_for,
)
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
    g.add_argument(
        "--max-slices",
        type=int,
        metavar="N",
        help="an even sample of N slices, first and last included (default: the recipe's, "
        "85 for a CT or MR volume, fitted to the server's limits); for a whole slide, N of "
        "its tissue patches, evenly spread (default: up to 125)",
    )
    g.add_argument(
        "--image-limit",
        type=int,
        metavar="N",
        help="images per prompt when the server publishes none on /v1/models (a plain vLLM; "
        "MEDGEMMA_IMAGE_LIMIT); a published limit wins",
    )
    g.add_argument(
        "--window",
        choices=WINDOWS,
        help="display window (default: the recipe's: rgb, three HU windows, for CT; volume, "
        "one scale over the slices sent, for MR; voi otherwise)",
    )
    g.add_argument(
        "--tags",
        default="",
        metavar="A,B",
        help=f"non-identifying attributes added as text, from: {','.join(ALLOWED_TAGS)}",
    )


def study_options(args: argparse.Namespace) -> StudyOptions:
    """The options from the flags, checked before anything is fetched or asked."""
    if args.max_slices is not None and args.max_slices < 1:
        raise ValueError(f"--max-slices must be at least 1, not {args.max_slices}")
    return StudyOptions(
        series_uid=getattr(args, "series", None),
        max_slices=args.max_slices,
        window=args.window,
        tags=check_tags(t.strip() for t in args.tags.split(",") if t.strip()),
        max_size=args.max_size or None,
    )


def check_chat_flags(args: argparse.Namespace) -> None:
    if not args.dicomweb or not args.study:
        given, needed = ("--dicomweb", "--study") if args.dicomweb else ("--study", "--dicomweb")
        raise ValueError(f"{given} needs {needed}: a study is fetched from a PACS by its UID")
    if args.image:
        raise ValueError("--image and --dicomweb cannot be combined: send one or the other")
    task = TASKS.get(args.task) if args.task else None  # localize is clients.cxr_cli's
    if task is not None and task.needs_report:
        raise ValueError(f"task {args.task!r} needs a report, which a PACS study comes without")


@dataclass(frozen=True)
class StudyChat:
    """What `chat --dicomweb` sends, and what --store-sr needs afterwards."""

    request: TaskRequest
    sent: Sent | SlideSent
    datasets: list[Dataset]  # a slide's: its metadata (no pixels)


def say_limits(limits: Limits) -> None:
    """One stderr line when the limits were not learned from the server."""
    note = limits.note()
    if note:
        print(note, file=sys.stderr, flush=True)


def chat_request(args: argparse.Namespace, limits_of: Callable[[], Limits]) -> StudyChat:
    """The request for `chat --dicomweb`: the study fetched, then the server's limits asked
    (limits_of), then the series shown by its recipe fitted to them; prints what is sent to
    stderr. Nothing is sent when not one image fits (LimitError)."""
    check_chat_flags(args)
    options = study_options(args)
    system = RECIPE if args.system is None else args.system
    if is_slide_study(args.dicomweb, args.study):
        return slide_chat(args, options, limits_of)
    datasets = fetch(args.dicomweb, args.study, options.series_uid)
    limits = limits_of()
    if args.task:
        request, sent = task_request_for(
            TASKS[args.task], datasets, options, max_tokens=args.max_tokens, limits=limits
        )
    else:
        params = {"max_tokens": args.max_tokens} if args.max_tokens else None
        request, sent = request_for(
            datasets, args.text, options, system=system, params=params, limits=limits
        )
    say_limits(limits)
    print(sent.line(), file=sys.stderr, flush=True)
    return StudyChat(request, sent, datasets)


def slide_chat(
    args: argparse.Namespace, options: StudyOptions, limits_of: Callable[[], Limits]
) -> StudyChat:
    """chat_request for a whole slide: its tissue patches (a task preset's text, or the
    question), the text first; no system prompt unless --system."""
    question = TASKS[args.task] if args.task else args.text
    params = {"max_tokens": args.max_tokens} if args.max_tokens else None
    slide = slide_fetch_request(
        args.dicomweb, args.study, question, options, system=args.system, params=params,
        limits=limits_of,
    )  # fmt: skip
    say_limits(limits_of())
    print(slide.sent.line(), file=sys.stderr, flush=True)
    return StudyChat(slide.request, slide.sent, slide.metadata)


def store_answer(url: str, chat: StudyChat, answer: str, model: str) -> str:
    """Store `answer` into the study as an SR (built and checked before the one STOW-RS
    request); the line to print. Raises ReportError or PacsError (one line)."""
    from clients.report_sr import build_report_sr, sent_instances, store_sr

    if isinstance(chat.sent, SlideSent):  # the level the patches were cut from
        sources = level_instance(chat.datasets, chat.sent)
    else:
        sources = sent_instances(chat.datasets, chat.sent)
    return store_sr(url, build_report_sr(sources, answer, model_name=model)).line()


def batch_items(args: argparse.Namespace) -> list[DicomwebStudy]:
    """The studies a QIDO-RS search finds, for `batch --dicomweb` (each fitted to the
    client's limits when its turn comes: clients.batch)."""
    if args.folder is not None:
        raise ValueError("give a folder or --dicomweb URL, not both")
    since = parse_since(args.since) if args.since else None
    options = study_options(args)
    refs = search_studies(args.dicomweb, args.modality, since)
    print(f"{len(refs)} studies found at {args.dicomweb}", file=sys.stderr, flush=True)
    return [DicomwebStudy(ref.study_uid, args.dicomweb, options) for ref in refs]

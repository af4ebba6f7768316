"""The chest X-ray options of `python -m clients chat`: a prior + current comparison
(--prior-study UID | --prior auto) and localization (--task localize --object NAME
[--overlay out.png] [--store-sr]); the recipes are clients.cxr's. And `batch`'s task:
`--task localize --object NAME`, or `--prior auto [--question TEXT]`, each study found
compared with its prior.

Localization prints the boxes as JSON in the original image's pixels on stdout. An answer
without usable boxes (none, malformed, outside the image) prints the raw answer on stdout,
then one `error:` line; nothing is drawn or stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from clients.boxes import BoxError
from clients.chat import MedGemmaClient
from clients.cxr import COMPARE_QUESTION, Compare, Localize, Radiograph
from clients.cxr_client import AUTO, compare_request, localize_pixels, study_radiograph
from clients.image_input import load_image
from clients.lab_report import LAB_REPORT, LabReportTask
from clients.study_cli import StudyChat, check_chat_flags, say_limits
from clients.tasks import TASKS, Task

LOCALIZE = "localize"
NEEDS_OBJECT = '--task localize needs --object NAME: what to find (e.g. --object "right clavicle")'


def add_cxr_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chest X-ray (MedGemma 1.5's comparison and localization)")
    g.add_argument(
        "--prior-study",
        "--prior",
        dest="prior_study",
        metavar="UID|auto",
        help="compare --study with this earlier study (one turn: prior image, current image, "
        "question); 'auto': the patient's most recent earlier study of the same modality, "
        "found by QIDO-RS",
    )
    g.add_argument("--object", help="--task localize: what to find, e.g. 'right clavicle'")
    g.add_argument(
        "--overlay", type=Path, metavar="PNG", help="--task localize: draw the boxes into this PNG"
    )


def add_batch_prior_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chest X-ray comparison (each study with its prior)")
    g.add_argument(
        "--prior",
        choices=[AUTO],
        help="'auto': send each study found with the patient's most recent earlier study of "
        "the same modality (QIDO-RS), as `chat --prior auto`; a study with none is an error "
        "record",
    )
    g.add_argument(
        "--question",
        help=f"--prior auto: the question asked of each pair (default {COMPARE_QUESTION!r})",
    )


def batch_task(args: argparse.Namespace) -> Task | Localize | Compare | LabReportTask:
    """The task of `batch`: a preset (findings by default), localization of --object in
    every study, or with --prior auto each study compared with its prior."""
    if args.prior:
        if args.task or args.object:
            raise ValueError(
                "--prior auto compares each study with its prior: no --task or --object"
            )
        if not args.dicomweb:
            raise ValueError("--prior auto compares studies in a PACS: give --dicomweb URL")
        question = COMPARE_QUESTION if args.question is None else " ".join(args.question.split())
        if not question:
            raise ValueError("--question is empty: the comparison needs a question")
        return Compare(question)
    if args.question is not None:
        raise ValueError("--question is for --prior auto")
    if args.task != LOCALIZE:
        if args.object:
            raise ValueError("--object is for --task localize")
        return LabReportTask() if args.task == LAB_REPORT else TASKS[args.task or "findings"]
    if not args.object or not args.object.strip():
        raise ValueError(NEEDS_OBJECT)
    return Localize(" ".join(args.object.split()))


def compare_chat(args: argparse.Namespace, client: MedGemmaClient) -> StudyChat:
    """The comparison's request for `chat --prior-study`; prints what is sent to stderr."""
    check_chat_flags(args)
    if args.task or args.series:
        raise ValueError(
            "--prior-study compares the two studies' radiographs: no --task or --series"
        )
    pair = compare_request(
        args.dicomweb,
        args.study,
        args.text,
        AUTO if args.prior_study == AUTO else args.prior_study,
        limits=client.limits,
        max_tokens=args.max_tokens,
        max_size=args.max_size or None,
    )
    say_limits(client.limits())
    print(pair.sent.line(), file=sys.stderr, flush=True)
    return StudyChat(pair.request, pair.radiograph.sent, pair.current)


def localize_source(args: argparse.Namespace) -> tuple[np.ndarray, Radiograph | None]:
    """The image to localize in: the study's radiograph, or the one --image."""
    if not args.object or not args.object.strip():
        raise ValueError(NEEDS_OBJECT)
    if args.dicomweb or args.study:
        check_chat_flags(args)
        image, _ = study_radiograph(args.dicomweb, args.study, args.series)
        return image.pixels, image
    if args.store_sr:
        raise ValueError("--store-sr needs --dicomweb and --study: the boxes go into that study")
    if len(args.image) != 1:
        raise ValueError(
            "--task localize takes one image: --image PATH, or --dicomweb URL --study UID"
        )
    return np.asarray(load_image(args.image[0], frame=args.frame)), None


def cmd_localize(args: argparse.Namespace, client: MedGemmaClient) -> int:
    pixels, image = localize_source(args)
    height, width = pixels.shape[:2]
    print(
        f"sent 1 image (localization: {width} x {height} padded to a centred "
        f"{max(width, height)} px square)" + (f"; series {image.sent.series_uid}" if image else ""),
        file=sys.stderr,
        flush=True,
    )
    params = {} if args.temperature is None else {"temperature": args.temperature}
    if args.max_tokens:
        params["max_tokens"] = args.max_tokens
    try:
        found = localize_pixels(
            client, pixels, args.object, max_size=args.max_size or None, **params
        )
    except BoxError as exc:
        print(exc.raw)
        raise BoxError(
            f"{exc} (the raw answer is above; nothing drawn or stored)", exc.raw
        ) from None
    result = found.result
    print(json.dumps([box.as_json() for box in found.boxes], indent=2))
    print(
        f"[{result.model}: finish_reason={result.finish_reason} usage={result.usage} "
        f"latency={result.latency_s:.2f}s]",
        file=sys.stderr,
    )
    if args.overlay:
        from clients.boxes import overlay

        overlay(found.pixels, found.boxes).save(args.overlay, "PNG")
        print(f"overlay written: {args.overlay}", file=sys.stderr)
    if args.store_sr and image is not None:
        from clients.boxes import after_thinking
        from clients.report_regions import region_items
        from clients.report_sr import build_report_sr, store_sr

        regions = region_items(found.boxes, image.source)
        text = after_thinking(result.text)
        sr = build_report_sr([image.source], text, model_name=result.model, regions=regions)
        print(store_sr(args.dicomweb, sr).line(), file=sys.stderr)
    return 0

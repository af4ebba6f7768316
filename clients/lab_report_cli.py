"""The lab-report options of `python -m clients`: `chat --task lab-report --pdf report.pdf`
(or `--image page.png`, repeatable: the pages in order) [--page N], and the batch task;
the recipe is clients.lab_report's.

chat prints the LabReport as JSON on stdout and what was sent on stderr. An answer that is
not a LabReport prints the raw answer on stdout, then one `error:` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clients.chat import MedGemmaClient
from clients.lab_report import LabReportError, lab_report_request, read_answer
from clients.study_cli import say_limits


def add_lab_report_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lab report (MedGemma 1.5's document understanding)")
    g.add_argument(
        "--pdf", type=Path, metavar="PATH", help="--task lab-report: the report as a PDF"
    )
    g.add_argument(
        "--page",
        type=int,
        action="append",
        metavar="N",
        help="--task lab-report: send page N only (from 1; repeatable; default every page)",
    )


def check_lab_flags(args: argparse.Namespace) -> None:
    """The report comes from --pdf or --image, and nothing else goes with it."""
    if args.dicomweb or args.study or args.prior_study:
        raise ValueError("--task lab-report reads a PDF or page images: no --dicomweb or --study")
    if args.pdf and args.image:
        raise ValueError("--task lab-report takes --pdf PATH or --image PATH, not both")
    if not args.pdf and not args.image:
        raise ValueError("--task lab-report needs the report: --pdf PATH or --image PATH")


def cmd_lab_report(args: argparse.Namespace, client: MedGemmaClient) -> int:
    check_lab_flags(args)
    lab = lab_report_request(
        args.pdf or args.image,
        pages=args.page,
        pdf=bool(args.pdf),
        limits=client.limits,
        max_tokens=args.max_tokens,
        max_size=args.max_size or None,
    )
    say_limits(client.limits())
    print(lab.line(), file=sys.stderr, flush=True)
    params = {} if args.temperature is None else {"temperature": args.temperature}
    result = client.send(lab.request, **params)
    try:
        read_answer(result)
    except LabReportError as exc:
        print(exc.raw)
        raise LabReportError(f"{exc} (the raw answer is above)", exc.raw) from None
    assert result.parsed is not None
    print(result.parsed.model_dump_json(indent=2))
    print(
        f"[{result.model}: finish_reason={result.finish_reason} usage={result.usage} "
        f"latency={result.latency_s:.2f}s]",
        file=sys.stderr,
    )
    return 0

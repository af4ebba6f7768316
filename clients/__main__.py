"""Command line: `python -m clients chat|batch|models` (see --help on each).

chat streams one answer to the terminal; batch runs a task over a folder of studies into
a resumable JSONL file; both take studies from a PACS instead with --dicomweb
(clients.study_cli); models lists what the server serves (`python -m serve pacs` runs a
local PACS with sample studies). Connection settings come from
--base-url/--model/--timeout/--retries or the MEDGEMMA_* variables (chat.ClientSettings).
User errors end in one `error: ...` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import openai

from clients.boxes import BoxError
from clients.chat import ClientSettings, MedGemmaClient, env_name
from clients.cxr_cli import (
    LOCALIZE,
    add_batch_prior_options,
    add_cxr_options,
    batch_task,
    cmd_localize,
    compare_chat,
)
from clients.error_body import error_message
from clients.errors import ImageError, PacsError, SchemaError, ServerUnreachableError
from clients.lab_report import LAB_REPORT
from clients.lab_report_cli import add_lab_report_options, cmd_lab_report
from clients.messages import RADIOLOGIST, build_messages
from clients.study_cli import (
    add_study_options,
    batch_items,
    chat_request,
    say_limits,
    store_answer,
)
from clients.tasks import TASKS, TaskRequest

EPILOG = f"Environment: {', '.join(env_name(f) for f in ClientSettings.model_fields)}."


def add_connection(p: argparse.ArgumentParser) -> None:
    default = {name: f.default for name, f in ClientSettings.model_fields.items()}
    g = p.add_argument_group("server")
    g.add_argument("--base-url", help=f"OpenAI-compatible base URL (default {default['base_url']})")
    g.add_argument("--model", help="served model name (default: the server's only model)")
    g.add_argument(
        "--timeout",
        type=float,
        help=f"per-request timeout in seconds (default {default['timeout']:g})",
    )
    g.add_argument(
        "--retries",
        type=int,
        help=f"SDK retries on connection errors / 5xx (default {default['max_retries']})",
    )


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frame", type=int, help="frame of a multi-frame DICOM / image (0-based)")
    p.add_argument(
        "--max-size",
        type=int,
        default=896,
        help="downscale so the longest side is at most N px (default 896; 0 = full resolution)",
    )
    p.add_argument("--max-tokens", type=int, help="override the preset's max new tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients",
        description="Talk to a MedGemma deployment on vLLM's OpenAI-compatible API.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{chat,batch,models}")

    p = sub.add_parser(
        "chat",
        help="ask one question (with images), stream the answer",
        description="Send text and images, stream the answer to stdout (usage on stderr).",
        epilog=EPILOG,
    )
    p.add_argument("text", nargs="?", default="Describe this X-ray", help="the question")
    p.add_argument("--image", action="append", default=[], help="image path or URL (repeatable)")
    p.add_argument(
        "--system", default=None, help='system prompt (default "You are an expert radiologist.")'
    )
    p.add_argument(
        "--task",
        choices=sorted([*TASKS, LOCALIZE, LAB_REPORT]),
        help="use a task preset instead of plain chat (localize: boxes, with --object; "
        "lab-report: JSON, with --pdf or --image)",
    )
    p.add_argument("--report", help="report text, or @FILE to read it (summary, consistency)")
    p.add_argument("--history", help="patient history text, or @FILE (interpret)")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (default 0)"
    )
    p.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    add_image_options(p)
    add_study_options(p, chat=True)
    add_cxr_options(p)
    add_lab_report_options(p)
    add_connection(p)

    p = sub.add_parser(
        "batch",
        help="run a task over a folder of studies into resumable JSONL",
        description="Run a task over every DICOM / image file under DIR. One JSON line per "
        "study is written as it completes; a rerun skips finished studies and retries failed "
        "ones. Reports for summary/consistency are read from STEM.txt beside each image.",
        epilog=EPILOG,
    )
    p.add_argument("folder", type=Path, nargs="?", help="folder of studies (searched recursively)")
    p.add_argument(
        "--task",
        choices=sorted([*TASKS, LOCALIZE, LAB_REPORT]),
        help="task preset (default findings; localize: boxes, with --object; lab-report: "
        "each PDF or page image is one report)",
    )
    p.add_argument("--object", help="--task localize: what to find, e.g. 'right clavicle'")
    p.add_argument("--out", type=Path, default=Path("results.jsonl"), help="JSONL output")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_image_options(p)
    add_study_options(p, chat=False)
    add_batch_prior_options(p)
    add_connection(p)

    p = sub.add_parser("models", help="list the served models", epilog=EPILOG)
    add_connection(p)

    return parser


def read_arg(value: str | None) -> str | None:
    """A text argument, or the contents of FILE when given as @FILE."""
    if value and value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(errors="replace")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return value


def connect(args: argparse.Namespace) -> MedGemmaClient:
    """A client from the connection flags; flags not given fall back to MEDGEMMA_*."""
    return MedGemmaClient(
        base_url=args.base_url,
        model=args.model,
        timeout=args.timeout,
        max_retries=args.retries,
        image_limit=getattr(args, "image_limit", None),
    )


def cmd_models(args: argparse.Namespace) -> int:
    for name in connect(args).served_models():
        print(name)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    client = connect(args)
    max_size = args.max_size or None
    study = None
    if args.task == LOCALIZE:
        return cmd_localize(args, client)
    if args.task == LAB_REPORT:
        return cmd_lab_report(args, client)
    if args.pdf or args.page:
        raise ValueError("--pdf and --page are for --task lab-report")
    if getattr(args, "store_sr", False) and not args.dicomweb:
        raise ValueError("--store-sr needs --dicomweb and --study: the answer goes into that study")
    if args.prior_study:
        study = compare_chat(args, client)
        request = study.request
    elif args.dicomweb or args.study:
        study = chat_request(args, client.limits)
        request = study.request
    elif args.task:
        request = TASKS[args.task].build(
            args.image,
            report=read_arg(args.report),
            question=args.text,
            patient_history=read_arg(args.history),
            max_size=max_size,
            frame=args.frame,
            max_tokens=args.max_tokens,
        )
    else:
        system = RADIOLOGIST if args.system is None else args.system
        messages = build_messages(
            args.text, args.image, system=system, max_size=max_size, frame=args.frame
        )
        request = TaskRequest(messages, {"max_tokens": args.max_tokens or 300, "temperature": 0.0})
    params = {} if args.temperature is None else {"temperature": args.temperature}
    if args.no_stream or request.schema is not None:
        result = client.send(request, **params)
        if result.parsed is not None:
            print(result.parsed.model_dump_json(indent=2))
        else:
            print(result.text)
    else:
        stream = client.stream(request.messages, **{**request.params, **params})
        for delta in stream:
            sys.stdout.write(delta)
            sys.stdout.flush()
        print()
        assert stream.result is not None
        result = stream.result
    print(
        f"[{result.model}: finish_reason={result.finish_reason} usage={result.usage} "
        f"latency={result.latency_s:.2f}s]",
        file=sys.stderr,
    )
    if study is not None and args.store_sr:
        print(store_answer(args.dicomweb, study, result.text, result.model), file=sys.stderr)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from clients.batch import BatchItem, discover, run_items
    from clients.progress import BatchProgress

    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, not {args.concurrency}")
    lab = args.task == LAB_REPORT
    task = batch_task(args)
    client = connect(args)
    items: list[BatchItem]
    if args.dicomweb and lab:
        raise ValueError("--task lab-report reads PDFs and page images from a folder, not a PACS")
    if args.dicomweb:
        items = list(batch_items(args))
    elif args.folder is None:
        raise ValueError("give a folder of studies, or --dicomweb URL to search a PACS")
    elif not args.folder.is_dir():
        raise ValueError(f"{args.folder}: not a folder of studies")
    else:
        items = list(discover(args.folder, documents=lab))
    if args.dicomweb and items:
        say_limits(client.limits())
    with BatchProgress(enabled=not args.no_progress) as progress:
        summary = asyncio.run(
            run_items(
                client,
                items,
                task,
                args.out,
                concurrency=args.concurrency,
                max_size=args.max_size or None,
                frame=args.frame,
                max_tokens=args.max_tokens,
                on_start=progress.start,
                on_record=progress.advance,
            )
        )
    print(
        f"{summary.total} studies: {summary.skipped} already done, {summary.ok} ok, "
        f"{summary.failed} failed in {summary.elapsed_s:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0


def server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message from an error response body."""
    return error_message(exc.body) or exc.message


def explain(exc: BaseException) -> str | None:
    """One line for an error a user can fix; None for a bug (re-raised with traceback)."""
    if isinstance(exc, ServerUnreachableError):
        return exc.message
    if isinstance(exc, openai.AuthenticationError):
        return (
            f"the server refused the API key (401): set MEDGEMMA_API_KEY to the key the server "
            f"was started with ({server_message(exc)})"
        )
    if isinstance(exc, openai.APIStatusError):
        return f"the server answered {exc.status_code}: {server_message(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out: raise --timeout or MEDGEMMA_TIMEOUT"
    if isinstance(
        exc, (ImageError, SchemaError, BoxError, PacsError, ValueError, KeyError, OSError)
    ):
        return str(exc).strip("'\"")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"chat": cmd_chat, "batch": cmd_batch, "models": cmd_models}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line = explain(exc)
        if line is None:
            raise
        print(f"error: {' '.join(line.split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

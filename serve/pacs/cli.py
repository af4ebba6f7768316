"""`python -m serve pacs`: a local Orthanc with DICOMweb, loaded with the samples, until
Ctrl-C or SIGTERM. Prints the DICOMweb URL and each study's UID, modalities and instance
count, and what the synthetic ones are (never patient attributes)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from clients.dicomweb import search_studies
from clients.errors import PacsError
from serve.pacs.orthanc import DEFAULT_DICOM_PORT, DEFAULT_HTTP_PORT, Orthanc
from serve.pacs.samples import all_samples, load, synthetic_labels


class Stopped(Exception):
    """SIGTERM or SIGINT (Ctrl-C) arrived."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve pacs",
        description="Start Orthanc with its DICOMweb plugin on 127.0.0.1, load pydicom's "
        "sample files and six synthetic studies (a 60-slice CT phantom, a 120-slice CT "
        "volume, a 40-slice MR head, a prior and a current chest X-ray of one patient, a "
        "whole slide of three levels) by "
        "STOW-RS, print the DICOMweb URL and the studies, and "
        "run until Ctrl-C. Storage is temporary unless --storage.",
    )
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP / DICOMweb port")
    p.add_argument("--dicom-port", type=int, default=DEFAULT_DICOM_PORT, help="DICOM port")
    p.add_argument("--no-samples", action="store_true", help="start empty")
    p.add_argument(
        "--storage",
        type=Path,
        help="keep the PACS's database in this folder (default: a temporary one, deleted)",
    )
    return p


def stop_once(signum: int, frame: FrameType | None) -> None:
    """Stop on the first SIGTERM / Ctrl-C; ignore the next ones, so that they cannot cut
    the PACS's shutdown (and its storage's removal) short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("stopping the PACS...", file=sys.stderr, flush=True)
    raise Stopped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, stop_once)
    signal.signal(signal.SIGINT, stop_once)
    try:
        with Orthanc(args.http_port, args.dicom_port, storage=args.storage) as pacs:
            url = pacs.dicomweb_url
            if not args.no_samples:
                load(url, all_samples())
            print(f"DICOMweb: {url}")
            labels = synthetic_labels()
            for s in search_studies(url):
                line = f"  study {s.study_uid}  {'/'.join(s.modalities)}  {s.instances} instances"
                label = labels.get(s.study_uid)
                print(f"{line}  ({label})" if label else line)
            print("Ctrl-C stops the PACS", file=sys.stderr, flush=True)
            assert pacs.proc is not None
            code = pacs.proc.wait()
            raise PacsError(f"Orthanc exited with status {code}")
    except Stopped:
        print("PACS stopped", file=sys.stderr)
        return 0
    except PacsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

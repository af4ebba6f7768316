"""What a CT study costs the client before the model sees it: fetching a series from a PACS
(WADO-RS) and preparing it (ordering, sampling, windowing, encoding the slices) - a
benchmark that prints numbers, not a test. No vLLM server is involved.

    python -m benchmarks study-prep [--rounds 5] [--sizes 128,512] [--slices 60] [--send 60,8]

It starts a throwaway Orthanc (serve.pacs.orthanc), stores one CT phantom series per
--sizes entry (serve.pacs.phantom, --slices slices of SIZE x SIZE pixels), then, round
after round with the sizes alternating, times `clients.dicomweb.fetch_study` of the series
and `clients.study.build_study_messages` (CT's default rgb window) for each --send budget.
Every round is printed, then the medians, with the load average: Orthanc and the client
share this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks.runner.cli import module_main
from clients.dicomweb import fetch_study
from clients.errors import PacsError
from clients.study import build_study_messages
from serve.pacs.orthanc import Orthanc
from serve.pacs.phantom import PhantomSpec, phantom_series, uid
from serve.pacs.samples import load
from serve.process import free_port


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need whole numbers of at least 1: {text!r}")
    return values


DESCRIPTION = "Time fetching a CT series from a PACS and preparing it as slices."


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=5, help="rounds, sizes alternating in each")
    p.add_argument("--sizes", type=int_list, default=[128, 512], help="slice sizes in pixels")
    p.add_argument("--slices", type=int, default=60, help="slices in each series")
    p.add_argument("--send", type=int_list, default=[60, 8], help="slice budgets to prepare")


def one_round(url: str, spec: PhantomSpec, budgets: list[int]) -> tuple[float, dict[int, float]]:
    """Seconds to fetch the series, and to prepare it for each budget."""
    t0 = time.perf_counter()
    datasets = fetch_study(url, str(uid(spec, "study")), str(uid(spec, "series")))
    fetched = time.perf_counter() - t0
    prepared = {}
    for budget in budgets:
        t0 = time.perf_counter()
        _, sent = build_study_messages(datasets, "Any focal lesion?", budget=budget)
        prepared[budget] = time.perf_counter() - t0
        assert len(sent.indices) == min(budget, spec.slices)
    return fetched, prepared


def main(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.slices < 2:
        print("error: --rounds must be at least 1 and --slices at least 2", file=sys.stderr)
        return 2
    specs = [PhantomSpec(slices=args.slices, size=s, seed=i) for i, s in enumerate(args.sizes)]
    fetch_s: dict[int, list[float]] = {s.size: [] for s in specs}
    prep_s: dict[tuple[int, int], list[float]] = {(s.size, b): [] for s in specs for b in args.send}
    try:
        with Orthanc(free_port(), free_port()) as pacs:
            for spec in specs:
                load(pacs.dicomweb_url, phantom_series(spec))
            print(f"Orthanc {pacs.dicomweb_url}; {len(specs)} series of {args.slices} slices")
            for r in range(1, args.rounds + 1):
                order = specs if r % 2 else specs[::-1]
                for spec in order:
                    fetched, prepared = one_round(pacs.dicomweb_url, spec, args.send)
                    fetch_s[spec.size].append(fetched)
                    for budget, seconds in prepared.items():
                        prep_s[(spec.size, budget)].append(seconds)
                    prep = ", ".join(f"prepare {b} {s:.2f} s" for b, s in prepared.items())
                    print(f"round {r} {spec.size} px: fetch {fetched:.2f} s, {prep}", flush=True)
    except PacsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\nmedians over {args.rounds} rounds ({args.slices} slices; rgb window):")
    for spec in specs:
        fetch = statistics.median(fetch_s[spec.size])
        preps = ", ".join(
            f"prepare {b}: {statistics.median(prep_s[(spec.size, b)]):.2f} s" for b in args.send
        )
        print(f"  {spec.size} px: fetch {fetch:.2f} s, {preps}")
    print(
        f"load average {os.getloadavg()[0]:.1f}; Orthanc and the client share this machine's "
        f"{os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(
        module_main("benchmarks.experiments.study_prep", add_cli_args, main, DESCRIPTION)
    )

"""`python -m serve COMMAND`: serve a deployment, probe its readiness, plan its capacity,
pick the config that fits this host's GPU, render it for a cluster (or its dashboard and
alerts), draw its panels, manage its per-service keys, or build the stand-in model.
Without a command it serves: `python -m serve --config configs/deployments/cpu-tiny.yaml`
is `python -m serve serve ...`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module whose main(argv) runs it, one-line help)
COMMANDS = {
    "serve": ("serve.launch.cli", "start vLLM's OpenAI server for a deployment config (default)"),
    "probe": (
        "serve.launch.probe",
        "readiness: one image + text request to a running server (exit 0 ready, 1 not)",
    ),
    "plan": ("serve.plan.cli", "capacity plan: memory, KV cache, concurrency, ceilings"),
    "pick-config": (
        "serve.plan.pick",
        "the deployment config that fits this host's GPU (make serve's default), and why",
    ),
    "render": (
        "serve.render.cli",
        "render a deployment: ray or k8s, its Grafana dashboard or its alerting rules",
    ),
    "panels": ("serve.monitor.panels", "draw the dashboard's panels from Prometheus into a PNG"),
    "standin": ("serve.standin.tiny_model", "build the random-weight MedGemma stand-in"),
    "pacs": ("serve.pacs.cli", "a local PACS (Orthanc + DICOMweb) loaded with sample studies"),
    "keys": (
        "serve.auth.cli",
        "per-service API keys in a keys file: add (prints the key once), list, revoke",
    ),
    "verify": (
        "serve.verify.cli",
        "check that a running server's answers equal transformers' on the same weights",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, text) in COMMANDS.items():
        s = sub.add_parser(name, help=text, add_help=False)
        s.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        build_parser().print_help()
        return 0
    if not argv or argv[0] not in COMMANDS:
        argv = ["serve", *argv]
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

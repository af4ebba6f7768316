"""`python -m serve render`: the same config, rendered for a multi-node engine or a monitor.

    python -m serve render ray --config X [--set key=value] [--model PATH]
    python -m serve render k8s --config X [--set key=value] [--out DIR] [--scenario S | ...]
    python -m serve render dashboard --config X [--set key=value]
    python -m serve render alerts --config X [--scenario S | --ttft-slo-ms MS]

`ray` prints a shell script: `ray start` on the head and on each worker node, then the
vLLM server with `--distributed-executor-backend ray`. `k8s` prints the manifests as one
multi-document YAML (or writes one file each into DIR), the dashboard and the alerting
rules among them (serve.render.k8s_monitor). `dashboard` prints a Grafana dashboard (JSON),
`alerts` Prometheus alerting rules (YAML) whose TTFT objective is the scenario's
`slo.ttft_ms` (read by serve.workload.request), else --ttft-slo-ms, else 10 s (for `k8s`
too). The rendering is pure (`serve.render.ray`, `serve.render.k8s`,
`serve.render.dashboard`, `serve.render.alerts`); this module only loads, checks and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from serve.config.deployment import ConfigError, DeploymentConfig, load_config
from serve.model.shapes import ShapeError
from serve.plan.capacity import parallel_problems
from serve.plan.inputs import shape_for_config
from serve.render.alerts import AlertThresholds, render_alerts
from serve.render.dashboard import render_dashboard
from serve.render.k8s import render_k8s
from serve.render.ray import RenderError, render_ray, to_script
from serve.workload.request import ScenarioError, read_request


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve render",
        description="Render a deployment config for vLLM on Ray or for Kubernetes, or its "
        "Grafana dashboard or Prometheus alerting rules.",
    )
    p.add_argument("target", choices=["ray", "k8s", "dashboard", "alerts"], help="what to render")
    p.add_argument("--config", type=Path, required=True, help="deployment YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model", help="ray: model path or hub id to put in the command")
    p.add_argument("--out", type=Path, help="k8s: write one file per manifest into DIR")
    slo = p.add_mutually_exclusive_group()
    slo.add_argument(
        "--scenario",
        type=Path,
        help="alerts, k8s: the TTFT objective is this scenario's slo.ttft_ms",
    )
    slo.add_argument("--ttft-slo-ms", type=float, help="alerts, k8s: the TTFT p99 objective (ms)")
    return p


def alert_thresholds(scenario: Path | None, ttft_slo_ms: float | None) -> AlertThresholds:
    """The alerts' thresholds, the TTFT objective from --ttft-slo-ms or the scenario."""
    if ttft_slo_ms is not None:
        if ttft_slo_ms <= 0:
            raise RenderError(f"--ttft-slo-ms: must be above 0, got {ttft_slo_ms:g}")
        return AlertThresholds(ttft_slo_ms=ttft_slo_ms)
    if scenario is None:
        return AlertThresholds()
    try:
        slo_ms = read_request(scenario).slo.ttft_ms
    except ScenarioError as exc:
        raise RenderError(f"--scenario: {exc}") from None
    if slo_ms is None:
        raise RenderError(f"--scenario: {scenario} sets no slo.ttft_ms")
    return AlertThresholds(ttft_slo_ms=slo_ms)


def check_parallel(cfg: DeploymentConfig) -> None:
    """Refuse parallel sizes the model cannot be split by (needs its shape data)."""
    try:
        shape = shape_for_config(cfg, build_stand_in=False)
    except ShapeError as exc:
        print(f"note: parallel sizes not checked: {exc}", file=sys.stderr)
        return
    problems = parallel_problems(cfg.tensor_parallel_size, cfg.pipeline_parallel_size, shape)
    if problems:
        raise RenderError("\n".join(problems))


def ray_model_path(cfg: DeploymentConfig, model: str | None) -> str | None:
    """--model, else the stand-in's cache folder (built by `python -m serve standin`)."""
    if model:
        return model
    if cfg.stand_in is not None:
        from serve.paths import standin_dir

        return str(standin_dir(cfg.stand_in.preset, cfg.stand_in.seed))
    return None


def write_manifests(manifests: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, m in enumerate(manifests, start=1):
        path = out / f"{i:02d}-{m['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(m, sort_keys=False))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        if args.target == "dashboard":
            print(json.dumps(render_dashboard(cfg), indent=2))
            return 0
        if args.target == "alerts":
            thresholds = alert_thresholds(args.scenario, args.ttft_slo_ms)
            print(yaml.safe_dump(render_alerts(cfg, thresholds), sort_keys=False), end="")
            return 0
        if cfg.auth.keys_file is not None and args.target == "ray":
            raise RenderError(
                "auth.keys_file: service keys are checked by what `python -m serve` starts (the "
                "request guard, or the edge in front of `replicas:`) or by `render k8s` with "
                "`replicas:`; the ray render does not render them: unset it"
            )
        if args.target == "ray":
            check_parallel(cfg)
            print(to_script(render_ray(cfg, ray_model_path(cfg, args.model)), cfg), end="")
            return 0
        # Rendered first: its refusals (a stand-in, ...) come before check_parallel's note
        # that a stand-in not built yet cannot be checked.
        manifests = render_k8s(cfg, alert_thresholds(args.scenario, args.ttft_slo_ms))
        check_parallel(cfg)
    except (ConfigError, RenderError) as exc:
        print("error: " + str(exc).replace("\n", "\n  "), file=sys.stderr)
        return 2
    if args.out is None:
        print(yaml.safe_dump_all(manifests, sort_keys=False), end="")
        return 0
    try:
        paths = write_manifests(manifests, args.out)
    except OSError as exc:
        print(f"error: --out: cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0

"""`python -m serve plan`: will a config fit its GPUs, hold how many studies, how fast?

    python -m serve plan --config configs/deployments/medgemma-4b-it.yaml [MORE.yaml ...]
        [--gpu l4-24gb] [--scenario configs/scenarios/bench-cpu.yaml] [--images 1]
        [--text-tokens 200] [--output-tokens 300] [--bw-efficiency 0.7] [--mfu 0.6]
        [--mm-attention-efficiency 0.5] [--set key=value] [--json]

The plan is made by `serve.plan.planner` (pure: config, model shape, device, typical
request -> `Plan`) and printed by `serve.plan.report`. On a GPU the activation/CUDA-graph
overhead is an estimate (vLLM profiles it at start-up); on the CPU (`--gpu cpu`, the
default for `device: cpu`) the KV budget is `cpu_kvcache_space_gib` and the numbers are
vLLM's own. On a GPU the plan ends with the throughput ceiling of `serve.plan.roofline`
for the config's concurrency; the CPU gets none. The typical request comes from the
flags, over a benchmark scenario's (`--scenario`: its images per request, max_tokens, and
an estimate of its prompt text, read by `serve.workload`), over the defaults
(`serve.plan.request`). A scenario of CT studies (`images.kind: ct`) sets the studies
table's slices (`images.per_request`) and mixes (`images.radiograph_share`), and on a GPU
adds the ceilings of studies asked follow-up questions (`serve.plan.volumes`). Several
configs are planned in turn (a JSON list with --json). This module only parses, loads,
checks and prints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, replace

from serve.command.argv import for_host
from serve.config.deployment import ConfigError, load_config
from serve.host import host_cpu
from serve.model.shapes import ShapeError
from serve.plan import capacity as cap
from serve.plan.inputs import load_gpus, shape_for_config
from serve.plan.mm_prefix import MM_PREFIX_ATTENTION_EFFICIENCY
from serve.plan.planner import (
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_TEXT_TOKENS,
    Plan,
    PlanError,
    make_plan,
    resolve_device,
    suggest,
    with_roofline,
    with_study_ceilings,
)
from serve.plan.report import format_plan
from serve.plan.request import scenario_studies, typical_request
from serve.plan.roofline import DEFAULT_BW_EFFICIENCY, DEFAULT_MFU
from serve.plan.studies import DEFAULT_CT_SHARES, DEFAULT_CT_SLICES, parse_shares
from serve.workload.request import ScenarioError, ScenarioRequest, read_request


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve plan", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        required=True,
        nargs="+",
        help="deployment YAML (configs/deployments/*.yaml); several are planned in turn",
    )
    p.add_argument("--gpu", help="GPU type from serve/plan/gpus.yaml, or cpu (default: gpu_type)")
    p.add_argument(
        "--scenario",
        help="benchmark scenario YAML (configs/scenarios/bench-*.yaml) whose requests to plan for: "
        "images.per_request, max_tokens, and a text-token estimate of its prompts",
    )
    p.add_argument(
        "--images",
        type=int,
        help="images per request (default: the scenario's, else 1 if the model sees)",
    )
    p.add_argument(
        "--text-tokens",
        type=int,
        help=f"prompt text tokens (default: the scenario's estimate, else {DEFAULT_TEXT_TOKENS})",
    )
    p.add_argument(
        "--output-tokens",
        type=int,
        help=f"answer tokens (default: the scenario's max_tokens, else {DEFAULT_OUTPUT_TOKENS})",
    )
    p.add_argument(
        "--bw-efficiency",
        type=float,
        default=DEFAULT_BW_EFFICIENCY,
        help="share of peak memory bandwidth a decode step reaches (default %(default)s)",
    )
    p.add_argument(
        "--mfu",
        type=float,
        default=DEFAULT_MFU,
        help="share of peak bf16 FLOP/s vision and prefill reach (default %(default)s)",
    )
    p.add_argument(
        "--mm-attention-efficiency",
        type=float,
        default=MM_PREFIX_ATTENTION_EFFICIENCY,
        help="share of the MFU that vLLM's Triton image-mask attention reaches on Gemma 3's "
        "image prompts (ESTIMATE, default %(default)s; serve/plan/mm_prefix.py)",
    )
    p.add_argument(
        "--ct-slices",
        type=int,
        help=f"slices of a CT study in the studies table (default: a CT scenario's "
        f"images.per_request, else {DEFAULT_CT_SLICES}: 8,192 image tokens)",
    )
    p.add_argument(
        "--ct-shares",
        help="CT shares of the studies table's mixes, the rest radiographs (default: 0, "
        "1 - a CT scenario's images.radiograph_share, 1; else "
        + ",".join(f"{x:g}" for x in DEFAULT_CT_SHARES)
        + ")",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def read_scenario(path: str | None) -> ScenarioRequest | None:
    """The request fields of the --scenario file (None: no --scenario). Raises PlanError
    with the scenario's error on one line."""
    if path is None:
        return None
    try:
        return read_request(path)
    except ScenarioError as exc:
        raise PlanError(f"--scenario: {one_line(str(exc))}") from None


YAML_MARK = re.compile(r'in "<unicode string>", (line \d+, column \d+):?')


def one_line(message: str) -> str:
    """A multi-line error as one line: its lines joined by "; ", a YAML error's quoted
    source line and caret dropped and its position kept."""
    raw = message.splitlines()
    out = []
    for i, line in enumerate(raw):
        text = line.strip()
        if not text or text == "^" or (i + 1 < len(raw) and raw[i + 1].strip() == "^"):
            continue
        mark = YAML_MARK.fullmatch(text)
        out.append(f"at {mark.group(1)}" if mark else text)
    return "; ".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("images", "text_tokens", "output_tokens"):
        value = getattr(args, name)
        if value is not None and value < 0:
            print(f"error: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    if args.ct_slices is not None and args.ct_slices < 1:
        print("error: --ct-slices must be >= 1", file=sys.stderr)
        return 2
    try:
        ct_shares = None if args.ct_shares is None else parse_shares(args.ct_shares)
    except ValueError as exc:
        print(f"error: --ct-shares: {exc}", file=sys.stderr)
        return 2
    for name in ("bw_efficiency", "mfu", "mm_attention_efficiency"):
        if not 0 < getattr(args, name) <= 1:
            print(f"error: --{name.replace('_', '-')} must be in (0, 1]", file=sys.stderr)
            return 2
    try:
        scenario = read_scenario(args.scenario)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    codes, plans, texts = [], [], []
    for config in args.config:
        code, plan, text = plan_one(args, config, scenario, ct_shares)
        if plan is None:
            return code
        codes.append(code)
        plans.append(asdict(plan))
        head = f"== {config}\n" if len(args.config) > 1 else ""
        texts.append(head + text)
    if args.json:
        print(json.dumps(plans[0] if len(plans) == 1 else plans, indent=2))
    else:
        print("\n\n".join(texts))
    return max(codes)


def scenario_slices_and_shares(
    scenario: ScenarioRequest | None, slices: int | None, shares: list[float] | None
) -> tuple[int, list[float]]:
    """The studies table's CT slices and shares: the flags, over a CT scenario's
    (images.per_request; 0, 1 - images.radiograph_share, 1), over the defaults."""
    ct = scenario is not None and scenario.images.kind == "ct"
    if slices is None:
        slices = scenario.images.per_request if scenario is not None and ct else DEFAULT_CT_SLICES
    if shares is None:
        if scenario is not None and ct:
            mix = 1 - scenario.images.radiograph_share
            shares = sorted({0.0, mix, 1.0})
        else:
            shares = list(DEFAULT_CT_SHARES)
    return slices, shares


def plan_one(
    args: argparse.Namespace,
    config: str,
    scenario: ScenarioRequest | None,
    ct_shares: list[float] | None,
) -> tuple[int, Plan | None, str]:
    """(exit status, plan, report) of one config; (2, None, "") after printing the error."""
    try:
        # `dtype: auto` on the CPU is what this machine will run (serve.host)
        cfg = for_host(load_config(config, args.set), host_cpu()["flags"])
        shape = shape_for_config(cfg)
        device = resolve_device(cfg, args.gpu, load_gpus())
        request, source = typical_request(
            cfg,
            shape,
            images=args.images,
            text=args.text_tokens,
            output=args.output_tokens,
            scenario=scenario,
            scenario_path=args.scenario,
        )
        slices, shares = scenario_slices_and_shares(scenario, args.ct_slices, ct_shares)
        plan = make_plan(cfg, shape, device, request, ct_slices=slices, ct_shares=shares)
        if not plan.fits:
            plan = replace(plan, suggestion=suggest(cfg, shape, device, request))
        plan = replace(plan, request_source=source)
        dbytes = cap.dtype_bytes(cfg)
        efficiency = (args.bw_efficiency, args.mfu, args.mm_attention_efficiency)
        plan = with_roofline(plan, shape, device, request, dbytes, *efficiency)
        studies = scenario_studies(scenario, shape, request, slices)
        if studies is not None:
            plan = with_study_ceilings(plan, shape, device, *studies, dbytes, *efficiency)
    except (ConfigError, ShapeError, PlanError) as exc:
        print("error: " + str(exc).replace("\n", "\n  "), file=sys.stderr)
        return 2, None, ""
    return (0 if plan.fits else 1), plan, format_plan(plan, request)

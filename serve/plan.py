"""`python -m serve plan`: will a config fit its GPUs, and how many studies will it hold?

    python -m serve plan --config configs/medgemma-4b-it.yaml [--gpu l4-24gb]
        [--images 1] [--text-tokens 200] [--output-tokens 300] [--set key=value] [--json]

`make_plan` is pure (config, model shape, device, typical request -> `Plan`); the
arithmetic is in `serve.capacity`. On a GPU the activation/CUDA-graph overhead is an
estimate (vLLM profiles it at start-up); on the CPU (`--gpu cpu`, the default for
`device: cpu`) the KV budget is `cpu_kvcache_space_gib` and the numbers are vLLM's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace

from serve import capacity as cap
from serve.config import ConfigError, DeploymentConfig, load_config
from serve.shapes import Gpu, ModelShape, ShapeError, load_gpus, shape_for_config

CPU = "cpu"
MAX_SUGGESTED_NODES = 4


class PlanError(ValueError):
    """A config the planner cannot plan; the message names the field."""


@dataclass(frozen=True)
class Scenario:
    """A typical request: images, prompt text and answer tokens."""

    images: int = 1
    text_tokens: int = 200
    output_tokens: int = 300

    def tokens(self, shape: ModelShape) -> int:
        per_image = shape.mm_tokens_per_image + cap.IMAGE_WRAPPER_TOKENS
        return self.images * per_image + self.text_tokens + self.output_tokens


@dataclass(frozen=True)
class Plan:
    """Everything `python -m serve plan` prints, per device unless named otherwise."""

    model: str
    device: str
    device_memory_gib: float | None
    tp: int
    pp: int
    dp: int
    nodes: int
    utilization: float | None
    parameters: int
    weights_gib: float
    overhead_gib: float
    kv_budget_gib: float
    full_layers: int
    sliding_layers: int
    sliding_window: int | None
    kv_bytes_per_token_layer: int
    block_size: int
    layers_per_group: int
    groups: int
    num_blocks: int
    max_model_len: int
    vllm_kv_tokens: int
    vllm_max_concurrency: float
    request_tokens: int
    kv_concurrency: float
    max_num_seqs: int
    concurrent_requests: int
    fits: bool
    problems: list[str]
    suggestion: str | None = None


def resolve_device(cfg: DeploymentConfig, gpu: str | None, gpus: dict[str, Gpu]) -> Gpu | None:
    """The device to plan for (None: the CPU). Raises PlanError naming --gpu / gpu_type."""
    name, where = (gpu, "--gpu") if gpu else (cfg.gpu_type, "gpu_type")
    if name is None:
        if cfg.device == "cpu":
            return None
        raise PlanError(f"give --gpu NAME or set gpu_type in the config (known: {known(gpus)})")
    if name == CPU:
        if cfg.device != "cpu":
            raise PlanError(f"{where}: cpu plans `device: cpu` configs only")
        return None
    if name not in gpus:
        raise PlanError(f"{where}: unknown GPU type {name!r} (known: {known(gpus)})")
    return gpus[name]


def known(gpus: dict[str, Gpu]) -> str:
    return ", ".join([*sorted(gpus), CPU])


def make_plan(
    cfg: DeploymentConfig, shape: ModelShape, gpu: Gpu | None, scenario: Scenario
) -> Plan:
    """The capacity of `cfg` serving `shape` on `gpu` (None: the CPU). Pure."""
    problems = cap.parallel_problems(cfg.tensor_parallel_size, cfg.pipeline_parallel_size, shape)
    if problems:
        raise PlanError("\n".join(problems))
    tp, pp, dp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size, cfg.data_parallel_size
    dbytes = cap.dtype_bytes(cfg)
    mem = gpu.memory_bytes if gpu else 0
    weights = cap.weight_bytes_per_device(shape, tp, pp, dbytes)
    mnbt = cap.resolved_max_num_batched_tokens(cfg, mem)
    if gpu is None:
        max_seqs = cfg.max_num_seqs or 128 * tp * pp
        util = None
        overhead = 0
        budget = (cfg.cpu_kvcache_space_gib or cap.VLLM_DEFAULT_CPU_KV_GIB) * cap.GiB
    else:
        big = mem >= 70 * cap.GiB and "a100" not in gpu.name
        max_seqs = cfg.max_num_seqs or (1024 if big else 256)
        util = cfg.gpu_memory_utilization or cap.VLLM_DEFAULT_GPU_UTILIZATION
        overhead = cap.activation_bytes(shape, tp, mnbt, max_seqs, dbytes) + cap.NON_TORCH_BYTES
        if tp * pp > 1:
            overhead += cap.NCCL_BYTES
        if not cfg.extra_args.get("enforce_eager"):
            overhead += cap.CUDA_GRAPH_BYTES
        budget = int(util * mem) - weights - overhead
    block = cap.BLOCK_SIZE["cuda" if gpu else "cpu"]
    groups = cap.kv_groups(shape)
    per_layer = cap.kv_bytes_per_token_per_layer(shape, tp, dbytes)
    layers_here = cap.cdiv(groups.layers_per_group, pp)  # a group's layers on one stage
    num_blocks = max(budget, 0) // (layers_here * block * per_layer)
    max_len = min(cfg.max_model_len or shape.max_position_embeddings, shape.max_position_embeddings)
    in_flight = cap.in_flight_tokens(cfg, mnbt)
    blocks_max = cap.blocks_per_request(shape, groups, max_len, block, in_flight)
    vllm_conc = num_blocks / blocks_max
    req = scenario.tokens(shape)
    kv_conc = num_blocks / cap.blocks_per_request(shape, groups, req, block, in_flight)
    problems = []
    if gpu is not None and cfg.devices_per_node > gpu.max_per_node:
        problems.append(
            f"nodes: {cfg.nodes} node(s) need {cfg.devices_per_node} x {gpu.name} each; "
            f"a node holds at most {gpu.max_per_node}"
        )
    if gpu is not None and weights + overhead >= (util or 0) * mem:
        problems.append(
            f"weights ({weights / cap.GiB:.1f} GiB) and overhead ({overhead / cap.GiB:.1f} GiB) "
            f"per GPU exceed {util:.2f} x {mem / cap.GiB:.1f} GiB"
        )
    elif num_blocks < blocks_max:
        problems.append(
            f"the KV cache ({num_blocks} blocks) cannot hold one request of max_model_len "
            f"{max_len} ({blocks_max} blocks): vLLM refuses to start"
        )
    return Plan(
        model=shape.name,
        device=gpu.name if gpu else CPU,
        device_memory_gib=mem / cap.GiB if gpu else None,
        tp=tp,
        pp=pp,
        dp=dp,
        nodes=cfg.nodes,
        utilization=util,
        parameters=cap.param_counts(shape).total,
        weights_gib=weights / cap.GiB,
        overhead_gib=overhead / cap.GiB,
        kv_budget_gib=budget / cap.GiB,
        full_layers=cap.cdiv(shape.num_full_layers, pp),
        sliding_layers=cap.cdiv(shape.num_sliding_layers, pp),
        sliding_window=shape.sliding_window,
        kv_bytes_per_token_layer=per_layer,
        block_size=block,
        layers_per_group=layers_here,
        groups=groups.full_groups + groups.sliding_groups,
        num_blocks=num_blocks,
        max_model_len=max_len,
        vllm_kv_tokens=int(vllm_conc * max_len),
        vllm_max_concurrency=vllm_conc,
        request_tokens=req,
        kv_concurrency=kv_conc,
        max_num_seqs=max_seqs,
        concurrent_requests=int(min(kv_conc, max_seqs)) * dp if not problems else 0,
        fits=not problems,
        problems=problems,
    )


def suggest(
    cfg: DeploymentConfig, shape: ModelShape, gpu: Gpu | None, scenario: Scenario
) -> str | None:
    """The smallest tensor (then pipeline) parallel size that fits, as config fields."""
    if gpu is None:
        return None
    current = (cfg.tensor_parallel_size, cfg.pipeline_parallel_size)
    candidates = sorted(
        (
            (tp, pp)
            for pp in cap.divisors(shape.num_layers)
            if pp <= MAX_SUGGESTED_NODES
            for tp in range(1, gpu.max_per_node + 1)
            if (tp, pp) != current and not cap.parallel_problems(tp, pp, shape)
        ),
        key=lambda c: (c[0] * c[1], c[1]),  # fewest devices, then tensor parallel first
    )
    for tp, pp in candidates:
        trial = cfg.model_copy(
            update={"tensor_parallel_size": tp, "pipeline_parallel_size": pp, "nodes": pp}
        )
        if make_plan(trial, shape, gpu, scenario).fits:
            nodes = f", nodes: {pp} (one pipeline stage per node)" if pp > 1 else ""
            return (
                f"tensor_parallel_size: {tp}, pipeline_parallel_size: {pp}{nodes} "
                f"= {tp * pp} x {gpu.name} per replica"
            )
    return None


def format_plan(p: Plan, scenario: Scenario) -> str:
    """The human-readable report."""
    gib = "GiB"
    dev = p.device
    if p.device_memory_gib is not None:
        head = f"{p.model} on {p.tp * p.pp * p.dp} x {dev} ({p.device_memory_gib:.1f} {gib} each)"
        budget_how = f"{p.utilization:.2f} x {p.device_memory_gib:.1f} {gib} - weights - overhead"
    else:
        head = f"{p.model} on the CPU ({p.tp * p.pp * p.dp} rank(s))"
        budget_how = "cpu_kvcache_space_gib (VLLM_CPU_KVCACHE_SPACE), per rank"
    per_tok = p.kv_bytes_per_token_layer
    window = p.sliding_window or 0
    lines = [
        head,
        f"parallel:           tensor {p.tp} x pipeline {p.pp} x data {p.dp} on {p.nodes} node(s)",
        f"weights per device: {p.weights_gib:6.2f} {gib}  ({format_count(p.parameters)} "
        f"parameters{' in RAM, outside the KV budget' if p.device_memory_gib is None else ''})",
    ]
    if p.device_memory_gib is not None:
        lines.append(
            f"overhead per GPU:   {p.overhead_gib:6.2f} {gib}  (ESTIMATE: activations, logits, "
            "CUDA context, NCCL, CUDA graphs; vLLM profiles it at start-up)"
        )
    lines += [
        f"KV budget per device: {p.kv_budget_gib:6.2f} {gib}  ({budget_how})",
        f"KV bytes per token per device: {p.full_layers} global layers x {per_tok:,} B = "
        f"{p.full_layers * per_tok:,} B for every token of context, plus "
        f"{p.sliding_layers} sliding layers x {per_tok:,} B = {p.sliding_layers * per_tok:,} B "
        f"for each of the last {window:,} tokens only",
        f"KV blocks:          {p.num_blocks:,} blocks of {p.block_size} tokens; vLLM groups the "
        f"layers into {p.groups} groups of {p.layers_per_group} per device",
        f"vLLM will report:   KV cache size: {p.vllm_kv_tokens:,} tokens, Maximum concurrency "
        f"for {p.max_model_len:,} tokens per request: {p.vllm_max_concurrency:.2f}x",
        f"typical request:    {scenario.images} image(s) + {scenario.text_tokens} text + "
        f"{scenario.output_tokens} output = {p.request_tokens:,} tokens",
    ]
    if p.fits:
        bound = "KV cache" if p.kv_concurrency < p.max_num_seqs else "max_num_seqs"
        lines.append(
            f"concurrent requests: {p.concurrent_requests:,} ({p.kv_concurrency:,.0f} per replica "
            f"fit the KV cache, max_num_seqs {p.max_num_seqs}; bound by {bound}; x {p.dp} "
            "replica(s))"
        )
        lines.append("fits:               yes")
    else:
        lines.append("fits:               NO: " + "; ".join(p.problems))
        lines.append(
            "smallest that fits: "
            + (p.suggestion or "none on one node of this GPU type; try a larger GPU")
        )
    return "\n".join(lines)


def format_count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n:,}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve plan", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="deployment YAML (configs/*.yaml)")
    p.add_argument("--gpu", help="GPU type from serve/gpus.yaml, or cpu (default: gpu_type)")
    p.add_argument("--images", type=int, help="images per request (default 1 if the model sees)")
    p.add_argument("--text-tokens", type=int, default=200, help="prompt text tokens")
    p.add_argument("--output-tokens", type=int, default=300, help="answer tokens")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("images", "text_tokens", "output_tokens"):
        value = getattr(args, name)
        if value is not None and value < 0:
            print(f"error: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    try:
        cfg = load_config(args.config, args.set)
        shape = shape_for_config(cfg)
        device = resolve_device(cfg, args.gpu, load_gpus())
        images = args.images
        if images is None:
            images = 1 if shape.vision and cfg.limit_mm_per_prompt.get("image", 0) else 0
        if images and shape.vision is None:
            raise PlanError(f"--images: {shape.name} is text-only and takes no images")
        scenario = Scenario(images, args.text_tokens, args.output_tokens)
        plan = make_plan(cfg, shape, device, scenario)
        if not plan.fits:
            plan = replace(plan, suggestion=suggest(cfg, shape, device, scenario))
    except (ConfigError, ShapeError, PlanError) as exc:
        print("error: " + str(exc).replace("\n", "\n  "), file=sys.stderr)
        return 2
    print(json.dumps(asdict(plan), indent=2) if args.json else format_plan(plan, scenario))
    return 0 if plan.fits else 1

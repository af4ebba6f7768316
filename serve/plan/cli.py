"""`python -m serve plan`: will a config fit its GPUs, hold how many studies, how fast?

    python -m serve plan --config configs/deployments/medgemma-4b-it.yaml [--gpu l4-24gb]
        [--scenario configs/scenarios/bench-cpu.yaml] [--images 1] [--text-tokens 200]
        [--output-tokens 300] [--bw-efficiency 0.7] [--mfu 0.6] [--set key=value] [--json]

`make_plan` is pure (config, model shape, device, typical request -> `Plan`); the
arithmetic is in `serve.plan.capacity`. On a GPU the activation/CUDA-graph overhead is an
estimate (vLLM profiles it at start-up); on the CPU (`--gpu cpu`, the default for
`device: cpu`) the KV budget is `cpu_kvcache_space_gib` and the numbers are vLLM's own.
On a GPU the plan ends with the throughput ceiling of `serve.plan.roofline` for the config's
concurrency; the CPU gets none. The typical request comes from the flags, over a
benchmark scenario's (`--scenario`: its images per request, max_tokens, and an estimate
of its prompt text), over the defaults.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from serve.command.argv import for_host
from serve.config.deployment import ConfigError, DeploymentConfig, load_config
from serve.host import host_cpu
from serve.model.shapes import ModelShape, ShapeError
from serve.plan import capacity as cap
from serve.plan.inputs import Gpu, load_gpus, shape_for_config
from serve.plan.roofline import (
    DEFAULT_BW_EFFICIENCY,
    DEFAULT_MFU,
    Roofline,
    format_roofline,
    make_roofline,
)
from serve.plan.studies import (
    DEFAULT_CT_SHARES,
    DEFAULT_CT_SLICES,
    SLICE_LABEL_TOKENS,
    MixRow,
    StudyCost,
    mix_name,
    mix_rows,
    parse_shares,
)

if TYPE_CHECKING:
    from benchmarks.runner.scenario import Scenario

CPU = "cpu"
MAX_SUGGESTED_NODES = 4
DEFAULT_TEXT_TOKENS = 200
DEFAULT_OUTPUT_TOKENS = 300
CHARS_PER_TOKEN = 4  # English prose in Gemma's SentencePiece vocabulary, roughly
# Gemma 3's chat template around one user turn: <bos> <start_of_turn> user \n, "\n\n" after
# the system text, <end_of_turn> \n <start_of_turn> model \n (the image wrapper is counted
# with the image, capacity.IMAGE_WRAPPER_TOKENS).
CHAT_TEMPLATE_TOKENS = 10


class PlanError(ValueError):
    """A config the planner cannot plan; the message names the field."""


@dataclass(frozen=True)
class RequestShape:
    """A typical request: images, prompt text and answer tokens."""

    images: int = 1
    text_tokens: int = DEFAULT_TEXT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS

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
    lora_gib: float  # LoRA slots per device (0 without `lora:`)
    lora_slots: int
    lora_rank: int
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
    request_source: str | None = None  # the scenario file the request shape came from
    roofline: Roofline | None = None
    roofline_note: str | None = None  # why there is no roofline
    radiograph: StudyCost | None = None  # a one-image study (None: a text-only model)
    ct: StudyCost | None = None  # a CT study of `ct.images` slices
    studies: list[MixRow] = field(default_factory=list)  # per replica, by CT share


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
    cfg: DeploymentConfig,
    shape: ModelShape,
    gpu: Gpu | None,
    request: RequestShape,
    *,
    ct_slices: int = DEFAULT_CT_SLICES,
    ct_shares: tuple[float, ...] | list[float] = DEFAULT_CT_SHARES,
) -> Plan:
    """The capacity of `cfg` serving `shape` on `gpu` (None: the CPU), and for a model that
    sees, the studies table: a radiograph (1 image) and a CT study (`ct_slices` images with
    their "SLICE n" labels), each with the typical request's text and answer. Pure."""
    problems = cap.parallel_problems(cfg.tensor_parallel_size, cfg.pipeline_parallel_size, shape)
    if problems:
        raise PlanError("\n".join(problems))
    tp, pp, dp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size, cfg.data_parallel_size
    dbytes = cap.dtype_bytes(cfg)
    mem = gpu.memory_bytes if gpu else 0
    weights = cap.weight_bytes_per_device(shape, tp, pp, dbytes)
    lora = 0
    if cfg.lora is not None:
        lora = cap.lora_slot_bytes(shape, cfg.lora.max_loras, cfg.lora.max_rank, tp, pp, dbytes)
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
        budget = int(util * mem) - weights - overhead - lora
    block = cap.BLOCK_SIZE["cuda" if gpu else "cpu"]
    groups = cap.kv_groups(shape)
    per_layer = cap.kv_bytes_per_token_per_layer(shape, tp, dbytes)
    layers_here = cap.cdiv(groups.layers_per_group, pp)  # a group's layers on one stage
    num_blocks = max(budget, 0) // (layers_here * block * per_layer)
    max_len = min(cfg.max_model_len or shape.max_position_embeddings, shape.max_position_embeddings)
    in_flight = cap.in_flight_tokens(cfg, mnbt)
    blocks_max = cap.blocks_per_request(shape, groups, max_len, block, in_flight)
    vllm_conc = num_blocks / blocks_max
    req = request.tokens(shape)
    kv_conc = num_blocks / cap.blocks_per_request(shape, groups, req, block, in_flight)
    problems = []
    if gpu is not None and cfg.devices_per_node > gpu.max_per_node:
        problems.append(
            f"nodes: {cfg.nodes} node(s) need {cfg.devices_per_node} x {gpu.name} each; "
            f"a node holds at most {gpu.max_per_node}"
        )
    if gpu is not None and weights + overhead + lora >= (util or 0) * mem:
        with_lora = f", LoRA slots ({lora / cap.GiB:.1f} GiB)" if lora else ""
        problems.append(
            f"weights ({weights / cap.GiB:.1f} GiB){with_lora} and overhead "
            f"({overhead / cap.GiB:.1f} GiB) per GPU exceed {util:.2f} x {mem / cap.GiB:.1f} GiB"
        )
    elif num_blocks < blocks_max:
        problems.append(
            f"the KV cache ({num_blocks} blocks) cannot hold one request of max_model_len "
            f"{max_len} ({blocks_max} blocks): vLLM refuses to start"
        )
    radiograph = ct = None
    rows: list[MixRow] = []
    if shape.vision is not None:

        def cost(images: int, labels: int) -> StudyCost:
            study = RequestShape(images, request.text_tokens + labels, request.output_tokens)
            tokens = study.tokens(shape)
            blocks = cap.blocks_per_request(shape, groups, tokens, block, in_flight)
            return StudyCost(images, tokens, blocks, blocks * layers_here * block * per_layer)

        radiograph = cost(1, 0)
        ct = cost(ct_slices, ct_slices * SLICE_LABEL_TOKENS)
        if not problems:
            rows = mix_rows(
                ct_shares,
                radiograph,
                ct,
                num_blocks=num_blocks,
                max_num_seqs=max_seqs,
                max_model_len=max_len,
                image_limit=cfg.limit_mm_per_prompt.get("image", 0),
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
        lora_gib=lora / cap.GiB,
        lora_slots=cfg.lora.max_loras if cfg.lora else 0,
        lora_rank=cfg.lora.max_rank if cfg.lora else 0,
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
        radiograph=radiograph,
        ct=ct,
        studies=rows,
    )


def suggest(
    cfg: DeploymentConfig, shape: ModelShape, gpu: Gpu | None, request: RequestShape
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
        if make_plan(trial, shape, gpu, request).fits:
            nodes = f", nodes: {pp} (one pipeline stage per node)" if pp > 1 else ""
            return (
                f"tensor_parallel_size: {tp}, pipeline_parallel_size: {pp}{nodes} "
                f"= {tp * pp} x {gpu.name} per replica"
            )
    return None


def format_plan(p: Plan, request: RequestShape) -> str:
    """The human-readable report."""
    gib = "GiB"
    dev = p.device
    if p.device_memory_gib is not None:
        head = f"{p.model} on {p.tp * p.pp * p.dp} x {dev} ({p.device_memory_gib:.1f} {gib} each)"
        budget_how = f"{p.utilization:.2f} x {p.device_memory_gib:.1f} {gib} - weights - overhead"
        if p.lora_slots:
            budget_how += " - LoRA slots"
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
    if p.lora_slots:
        where = (
            "subtracted from the KV budget"
            if p.device_memory_gib is not None
            else "in RAM, outside the KV budget"
        )
        lines.append(
            f"LoRA per device:    {p.lora_gib:6.2f} {gib}  ({p.lora_gib * 1024:,.1f} MiB: "
            f"{p.lora_slots} slot(s) x rank "
            f"{p.lora_rank}: vLLM preallocates every slot at lora.max_rank; {where})"
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
        *([f"request shape:      {p.request_source}"] if p.request_source else []),
        f"typical request:    {request.images} image(s) + {request.text_tokens} text + "
        f"{request.output_tokens} output = {p.request_tokens:,} tokens",
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
    lines += format_studies(p, request)
    if p.roofline is not None:
        lines += format_roofline(p.roofline)
    elif p.roofline_note:
        lines.append(f"roofline:           {p.roofline_note}")
    return "\n".join(lines)


def format_studies(p: Plan, request: RequestShape) -> list[str]:
    """The studies table: concurrent studies per replica for radiograph and CT mixes."""
    if p.radiograph is None or p.ct is None or not p.studies:
        return []
    where = f"{p.tp * p.pp} x {p.device}" if p.device_memory_gib is not None else "the CPU"
    mib = 2**20
    lines = [
        f"studies per replica ({where}): a radiograph is 1 image, {p.radiograph.tokens:,} "
        f"tokens; a CT study {p.ct.images} slices + {p.ct.images} x {SLICE_LABEL_TOKENS} "
        f"'SLICE n' tokens (ESTIMATE), {p.ct.tokens:,} tokens; each + {request.text_tokens} "
        f"text + {request.output_tokens} output (--ct-slices, --ct-shares)",
        f"  {'mix':<26} {'tokens/study':>12} {'KV MiB/study':>12} {'KV holds':>9} "
        f"{'concurrent':>10}  bound",
    ]
    for r in p.studies:
        lines.append(
            f"  {mix_name(r.ct_share):<26} {r.mean_tokens:>12,.0f} {r.mean_kv_bytes / mib:>12,.1f} "
            f"{r.kv_studies:>9,.1f} {r.concurrent:>10,}  {r.bound}"
        )
    return lines


def format_count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n:,}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve plan", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="deployment YAML (configs/*.yaml)")
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
        "--ct-slices",
        type=int,
        default=DEFAULT_CT_SLICES,
        help="slices of a CT study in the studies table (default %(default)s: 32 x 256 = "
        "8,192 image tokens)",
    )
    p.add_argument(
        "--ct-shares",
        default=",".join(f"{x:g}" for x in DEFAULT_CT_SHARES),
        help="CT shares of the studies table's mixes, the rest radiographs (default %(default)s)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def request_shape(
    args: argparse.Namespace, cfg: DeploymentConfig, shape: ModelShape
) -> tuple[RequestShape, str | None]:
    """The typical request from the flags, over the scenario's, over the defaults; and a
    line saying where it came from when a scenario was read. Raises PlanError."""
    images, text, output, source = args.images, args.text_tokens, args.output_tokens, None
    if args.scenario:
        from benchmarks.runner.scenario import ScenarioError, load_scenario

        try:
            bench = load_scenario(args.scenario)
        except ScenarioError as exc:
            raise PlanError(f"--scenario: {one_line(str(exc))}") from None
        estimate = scenario_text_tokens(bench)
        if images is None:
            images = bench.images.per_request if shape.vision else 0
        text = estimate if text is None else text
        output = bench.max_tokens if output is None else output
        source = (
            f"scenario {args.scenario}: images.per_request {bench.images.per_request}, "
            f"max_tokens {bench.max_tokens}, text ~{estimate} tokens (ESTIMATE: characters of "
            f"the system + task prompts / {CHARS_PER_TOKEN} + {CHAT_TEMPLATE_TOKENS} chat-"
            "template tokens; flags override)"
        )
        if shape.vision is None:
            source += f"; {shape.name} is text-only: planned without images"
        elif bench.images.text_only_share:
            source += (
                f"; its {bench.images.text_only_share:.0%} text-only requests are planned "
                "as image requests"
            )
    if images is None:
        images = 1 if shape.vision and cfg.limit_mm_per_prompt.get("image", 0) else 0
    if images and shape.vision is None:
        raise PlanError(f"--images: {shape.name} is text-only and takes no images")
    return (
        RequestShape(
            images,
            DEFAULT_TEXT_TOKENS if text is None else text,
            DEFAULT_OUTPUT_TOKENS if output is None else output,
        ),
        source,
    )


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


def scenario_text_tokens(bench: Scenario) -> int:
    """Prompt text tokens of a benchmark scenario's requests, ESTIMATED: the characters of
    the text the benchmark sends (built by `benchmarks.runner.workload.task_messages`, as a run
    builds it) / CHARS_PER_TOKEN, plus the chat template's markup; the mean over its tasks.
    """
    from benchmarks.runner.workload import task_messages

    image = {"type": "image_url", "image_url": {"url": "data:,"}}  # placeholder, not sent
    kinds = 1 if bench.prompts.text is not None else len(bench.prompts.tasks)
    counts = []
    for i in range(kinds):
        _, messages, _ = task_messages(bench, i, [image] * bench.images.per_request)
        chars = 0
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                chars += len(content)
            else:
                chars += sum(len(part.get("text", "")) for part in content)
        counts.append(cap.cdiv(chars, CHARS_PER_TOKEN) + CHAT_TEMPLATE_TOKENS)
    return round(sum(counts) / len(counts))


def with_roofline(
    plan: Plan,
    shape: ModelShape,
    gpu: Gpu | None,
    request: RequestShape,
    dtype_bytes: int,
    bw_efficiency: float,
    mfu: float,
) -> Plan:
    """The plan with its throughput ceiling, or the reason there is none."""
    if gpu is None:
        note = "not computed for the CPU (serve/plan/gpus.yaml has no CPU bandwidth or peak FLOP/s)"
        return replace(plan, roofline_note=note)
    if not plan.fits:
        return replace(plan, roofline_note="not computed: the config does not fit")
    if plan.request_tokens > plan.max_model_len:
        note = (
            f"not computed: the typical request ({plan.request_tokens:,} tokens) exceeds "
            f"max_model_len {plan.max_model_len:,}, and vLLM refuses it"
        )
        return replace(plan, roofline_note=note)
    if plan.concurrent_requests < plan.dp:
        return replace(plan, roofline_note="not computed: no typical request fits the KV cache")
    r = make_roofline(
        shape,
        gpu,
        dtype_bytes=dtype_bytes,
        tp=plan.tp,
        pp=plan.pp,
        dp=plan.dp,
        batch=plan.concurrent_requests // plan.dp,
        images=request.images,
        text_tokens=request.text_tokens,
        output_tokens=request.output_tokens,
        bw_efficiency=bw_efficiency,
        mfu=mfu,
    )
    return replace(plan, roofline=r)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("images", "text_tokens", "output_tokens"):
        value = getattr(args, name)
        if value is not None and value < 0:
            print(f"error: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    if args.ct_slices < 1:
        print("error: --ct-slices must be >= 1", file=sys.stderr)
        return 2
    try:
        ct_shares = parse_shares(args.ct_shares)
    except ValueError as exc:
        print(f"error: --ct-shares: {exc}", file=sys.stderr)
        return 2
    for name in ("bw_efficiency", "mfu"):
        if not 0 < getattr(args, name) <= 1:
            print(f"error: --{name.replace('_', '-')} must be in (0, 1]", file=sys.stderr)
            return 2
    try:
        # `dtype: auto` on the CPU is what this machine will run (serve.host)
        cfg = for_host(load_config(args.config, args.set), host_cpu()["flags"])
        shape = shape_for_config(cfg)
        device = resolve_device(cfg, args.gpu, load_gpus())
        request, source = request_shape(args, cfg, shape)
        plan = make_plan(cfg, shape, device, request, ct_slices=args.ct_slices, ct_shares=ct_shares)
        if not plan.fits:
            plan = replace(plan, suggestion=suggest(cfg, shape, device, request))
        plan = replace(plan, request_source=source)
        plan = with_roofline(
            plan, shape, device, request, cap.dtype_bytes(cfg), args.bw_efficiency, args.mfu
        )
    except (ConfigError, ShapeError, PlanError) as exc:
        print("error: " + str(exc).replace("\n", "\n  "), file=sys.stderr)
        return 2
    print(json.dumps(asdict(plan), indent=2) if args.json else format_plan(plan, request))
    return 0 if plan.fits else 1

"""The capacity plan of a deployment config: memory, KV cache, concurrency, studies, ceiling.

`make_plan` is pure (config, model shape, device, typical request -> `Plan`); the
arithmetic is in `serve.plan.capacity`, the studies table's in `serve.plan.studies`. On a
GPU the activation/CUDA-graph overhead is an estimate (vLLM profiles it at start-up); on
the CPU the KV budget is `cpu_kvcache_space_gib` and the numbers are vLLM's own.
`suggest` finds the smallest parallel sizes that fit; `with_roofline` adds the throughput
ceiling of `serve.plan.roofline` on a GPU. All pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from serve.config.deployment import DeploymentConfig
from serve.model.shapes import ModelShape
from serve.plan import capacity as cap
from serve.plan.inputs import Gpu
from serve.plan.mm_prefix import MM_PREFIX_ATTENTION_EFFICIENCY
from serve.plan.roofline import Roofline, make_roofline, weight_bytes_per_step
from serve.plan.studies import (
    DEFAULT_CT_SHARES,
    DEFAULT_CT_SLICES,
    SLICE_LABEL_TOKENS,
    MixRow,
    StudyCost,
    mix_rows,
)
from serve.plan.volumes import Study, StudyCeiling, StudyWork, mix_ceiling, study_work

CPU = "cpu"
MAX_SUGGESTED_NODES = 4
DEFAULT_TEXT_TOKENS = 200
DEFAULT_OUTPUT_TOKENS = 300


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
    dp: int  # independent engines: data_parallel_size x replicas.count
    replicas: int  # replicas.count (vLLM servers behind vllm-router), 1 without `replicas:`
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
    # Studies asked several questions (a scenario's volumes and radiographs): the work of
    # each kind and the ceiling of each row of `studies` (serve.plan.volumes)
    study_works: list[StudyWork] = field(default_factory=list)
    study_ceilings: list[StudyCeiling] = field(default_factory=list)


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
    tp, pp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size
    # Replicas behind the router and data-parallel ranks are the same for capacity: engines
    # of tp x pp devices each, every one with its own KV cache (the config allows one or the
    # other, never both).
    replicas = cfg.replicas.count if cfg.replicas else 1
    dp = cfg.data_parallel_size * replicas
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
        replicas=replicas,
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


def with_roofline(
    plan: Plan,
    shape: ModelShape,
    gpu: Gpu | None,
    request: RequestShape,
    dtype_bytes: int,
    bw_efficiency: float,
    mfu: float,
    mm_attention_efficiency: float = MM_PREFIX_ATTENTION_EFFICIENCY,
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
        mm_attention_efficiency=mm_attention_efficiency,
    )
    return replace(plan, roofline=r)


def with_study_ceilings(
    plan: Plan,
    shape: ModelShape,
    gpu: Gpu | None,
    radiograph: Study,
    volume: Study,
    dtype_bytes: int,
    bw_efficiency: float,
    mfu: float,
    mm_attention_efficiency: float = MM_PREFIX_ATTENTION_EFFICIENCY,
) -> Plan:
    """The plan with the work of a radiograph and a volume study (their follow-up questions
    included) and, on a GPU, the ceiling of each mix of its studies table (serve.plan.volumes)."""
    if plan.radiograph is None:
        return plan
    tp = plan.tp
    works = [
        study_work(
            shape,
            s,
            dtype_bytes=dtype_bytes,
            tp=tp,
            block_size=plan.block_size,
            mm_attention_efficiency=mm_attention_efficiency,
        )
        for s in (radiograph, volume)
    ]
    ceilings = []
    if gpu is not None and plan.fits:
        weight_bytes = weight_bytes_per_step(shape, dtype_bytes)
        for row in plan.studies:
            if row.concurrent < 1:
                continue
            mix = [(1 - row.ct_share, works[0]), (row.ct_share, works[1])]
            ceilings.append(
                mix_ceiling(
                    row.name,
                    [(share, w) for share, w in mix if share > 0],
                    gpu,
                    tp=tp,
                    pp=plan.pp,
                    dp=plan.dp,
                    batch=row.concurrent,
                    weight_bytes=weight_bytes,
                    bw_efficiency=bw_efficiency,
                    mfu=mfu,
                )
            )
    return replace(plan, study_works=works, study_ceilings=ceilings)

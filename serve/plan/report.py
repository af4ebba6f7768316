"""The plan as `python -m serve plan` prints it: the report's lines (pure)."""

from __future__ import annotations

from serve.plan.planner import Plan, RequestShape
from serve.plan.roofline import format_roofline
from serve.plan.studies import SLICE_LABEL_TOKENS, mix_name


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
        f"parallel:           tensor {p.tp} x pipeline {p.pp} x "
        + (f"{p.replicas} replicas behind vllm-router" if p.replicas > 1 else f"data {p.dp}")
        + f" on {p.nodes} node(s)",
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
            f"{'replicas' if p.replicas > 1 else 'data-parallel rank(s)'})"
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
    lines += format_study_ceilings(p)
    return "\n".join(lines)


def format_study_ceilings(p: Plan) -> list[str]:
    """Studies asked follow-up questions: the work of each kind, and the ceiling of each
    mix on a GPU (serve.plan.volumes)."""
    if not p.study_works:
        return []
    r = p.roofline
    n = p.tp * p.pp

    def ms(flops: float) -> str:
        if r is None:
            return ""
        return f" = {1e3 * flops / (n * r.peak_tflops * 1e12 * r.ceiling.mfu):,.1f} ms"

    mfu = f" at {r.ceiling.mfu:.0%} MFU" if r is not None else ""
    lines = [f"studies with follow-up questions (formula in serve/plan/volumes.py){mfu}:"]
    for w in p.study_works:
        s = w.study
        lines.append(
            f"  {s.name}: {s.images} image(s), {s.prompt_tokens:,} prompt tokens; first question "
            f"{w.first_flops / 1e12:,.2f} TFLOP{ms(w.first_flops)} (vision "
            f"{w.vision_flops / 1e12:,.2f}); each of {s.follow_ups} follow-up(s) prefills "
            f"~{s.follow_up_tokens} new tokens after the cached prefix: "
            f"{w.follow_up_flops / 1e12:,.3f} TFLOP{ms(w.follow_up_flops)} (without prefix "
            f"caching {w.uncached_follow_up_flops / 1e12:,.2f}{ms(w.uncached_follow_up_flops)}); "
            f"{s.output_tokens} output tokens per question"
        )
    if not p.study_ceilings:
        why = "not computed for the CPU" if p.device_memory_gib is None else "not computed"
        return [*lines, f"  ceilings: {why}"]
    lines.append(
        f"  {'mix':<26} {'batch':>5} {'step ms':>7} {'studies/s':>9} {'images/s':>9} "
        f"{'questions/s':>11}  (all replicas; per study: compute ms + decode ms)"
    )
    for c in p.study_ceilings:
        lines.append(
            f"  {c.name:<26} {c.batch:>5} {c.step_s * 1e3:>7.1f} {c.studies_s:>9.2f} "
            f"{c.images_s:>9.1f} {c.questions_s:>11.2f}  {c.compute_s * 1e3:,.0f} + "
            f"{c.decode_s * 1e3:,.0f}"
        )
    return lines


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

"""Sampled stacks -> CPU per stage (pure): the arithmetic of `python -m benchmarks profile`.

py-spy's raw output ("collapsed stacks") is one line per distinct stack: frames from the
root to the leaf joined by ';', then the number of samples. Each stack is given to the
first stage whose pattern matches one of its frames (the rules of a process kind are
ordered, most specific first); stacks of a thread waiting for work are `idle` and left
out. A process's CPU time comes from the kernel (psutil), not from the samples: py-spy
sees only Python threads (not OpenMP's worker threads), so the samples give the split
between stages and the kernel gives the total.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IDLE = "idle"
OTHER = "other"

# (stage, substrings of a frame): the first rule with a matching frame wins. An `idle`
# rule matches the innermost frame only (a thread blocked in select, a queue or a lock).
Rules = tuple[tuple[str, tuple[str, ...]], ...]

WAITING = (
    "select (selectors",
    "_PollLikeSelector.select",
    "Runner.run (asyncio",
    "wait (threading.py",
    "get (queue.py",
    "Hub.run (gevent",
    "poll (zmq",
    "recv_multipart (zmq",
    "Connection._recv (",
    "wait (multiprocessing",
    "sleep (",
    "_worker (concurrent/futures/thread.py",  # a pool thread waiting for work
    "GarbageCollectorThread.run (zmq",  # pyzmq's thread, blocked in a zmq receive
)
BUSY_POLL = ("acquire_read", "SpinCondition", "sched_yield")

API_SERVER: Rules = (
    (IDLE, WAITING),
    ("guard middleware", ("serve/guard/",)),
    ("image decode (base64, PIL)", ("b64decode", "PIL/", "media/image.py", "load_base64")),
    (
        "multimodal processor (HF image processor, prompt updates)",
        (
            "image_processing",
            "image_processor",
            "torchvision",
            "_call_hf_processor",
            "MultiModalProcessor",
            "_process_multimodal",
        ),
    ),
    ("multimodal hashing and cache", ("hasher.py", "multimodal/cache.py", "blake3")),
    ("chat template and tokenization", ("chat_utils.py", "jinja", "tokeniz", "apply_hf_chat")),
    ("detokenization", ("detokenizer", "decode_token", "convert_ids_to_tokens")),
    ("request to engine (IPC)", ("core_client.py", "zmq/", "msgspec", "serial_utils")),
    ("output processing", ("output_processor.py", "logprobs")),
    ("SSE and HTTP", ("serving_chat.py", "starlette", "uvicorn", "h11", "httptools", "json")),
    ("request validation", ("pydantic", "protocol.py")),
)

ENGINE_CORE: Rules = (
    ("waiting on the worker (busy poll)", BUSY_POLL),
    (IDLE, WAITING),
    ("scheduling", ("scheduler.py", "kv_cache_manager", "block_pool", "kv_cache_coordinator")),
    ("IPC with the worker", ("collective_rpc", "MessageQueue")),
    ("structured output", ("structured_output",)),
    (
        "IPC with the API server",
        ("process_input_sockets", "process_output_sockets", "zmq/", "Queue.put"),
    ),
    ("output processing", ("update_from_output", "serial_utils", "msgspec")),
)

WORKER: Rules = (
    ("waiting on the engine (busy poll)", BUSY_POLL),
    (IDLE, WAITING),
    ("vision tower", ("_execute_mm_encoder", "embed_multimodal", "vision_tower", "siglip")),
    ("sampling", ("sampler", "Sampler", "compute_logits", "logits_processor")),
    ("language model forward (prefill + decode)", ("_model_forward",)),
    (
        "input preparation",
        ("_prepare_inputs", "_update_states", "_preprocess", "prepare_", "_build_attention"),
    ),
    ("output transfer", ("enqueue", "ModelRunnerOutput")),
)

LOAD_GENERATOR: Rules = (
    (IDLE, WAITING),
    ("HTTP client (geventhttpclient)", ("geventhttpclient",)),
    ("SSE parsing and records", ("locustfile.py",)),
    ("Locust", ("locust/",)),
)

RULES: dict[str, Rules] = {
    "api_server": API_SERVER,
    "engine_core": ENGINE_CORE,
    "worker": WORKER,
    "load_generator": LOAD_GENERATOR,
}


def parse_collapsed(text: str) -> Counter[tuple[str, ...]]:
    """py-spy `--format raw` text -> {stack (root first): samples}. Bad lines are skipped."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def classify(stack: Iterable[str], rules: Rules) -> str:
    """The stage of one stack: the first rule that matches any of its frames, else other."""
    frames = [f for f in stack if f]
    if not frames:
        return IDLE  # py-spy --idle: a thread with no Python frame at that instant
    for stage, patterns in rules:
        candidates = frames[-1:] if stage == IDLE else frames
        if any(p in f for f in candidates for p in patterns):
            return stage
    return OTHER


def stage_samples(stacks: Mapping[tuple[str, ...], int], rules: Rules) -> Counter[str]:
    """Samples per stage (idle included, under `idle`)."""
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        out[classify(stack, rules)] += n
    return out


@dataclass(frozen=True)
class ProcessProfile:
    """One process over the profiled window."""

    kind: str
    cpu_s: float  # from the kernel: every thread, OpenMP's included
    samples: Counter[str]  # py-spy samples per stage, idle included

    def busy_samples(self) -> int:
        return sum(n for stage, n in self.samples.items() if stage != IDLE)

    def stage_cpu_ms(self, requests: int) -> dict[str, float]:
        """CPU ms per completed request for each stage: the process's CPU time split in
        proportion to its non-idle samples. Empty when there are no samples or requests."""
        busy = self.busy_samples()
        if not busy or requests <= 0:
            return {}
        per_request_ms = self.cpu_s * 1000 / requests
        return {
            stage: round(per_request_ms * n / busy, 2)
            for stage, n in sorted(self.samples.items(), key=lambda kv: -kv[1])
            if stage != IDLE
        }


def summarise_processes(
    processes: list[ProcessProfile], requests: int, window_s: float
) -> dict[str, dict[str, object]]:
    """Per process kind: CPU seconds, share of all profiled CPU, cores used on average, CPU
    ms per request and per stage (pure). Processes of one kind are added together."""
    by_kind: dict[str, ProcessProfile] = {}
    for p in processes:
        if p.kind in by_kind:
            prev = by_kind[p.kind]
            p = ProcessProfile(p.kind, prev.cpu_s + p.cpu_s, prev.samples + p.samples)
        by_kind[p.kind] = p
    total = sum(p.cpu_s for p in by_kind.values())
    out: dict[str, dict[str, object]] = {}
    for kind, p in by_kind.items():
        out[kind] = {
            "cpu_s": round(p.cpu_s, 3),
            "share": round(p.cpu_s / total, 4) if total else 0.0,
            "cores": round(p.cpu_s / window_s, 3) if window_s > 0 else 0.0,
            "cpu_ms_per_request": round(p.cpu_s * 1000 / requests, 2) if requests else None,
            "samples": p.busy_samples(),
            "stages_ms_per_request": p.stage_cpu_ms(requests),
        }
    return out

"""The seed baseline: the deployment vs the seed notebook's transformers `generate`, same workload.

`python -m benchmarks baseline --scenario X` runs, one after the other (never together:
they would share the cores), (1) the scenario through the vLLM deployment (a server
started from the scenario's deployment config on a free port, unless --base-url names an
idle one), and (2) the seed notebook's way: `Gemma3ForConditionalGeneration` +
`AutoProcessor` from the same model folder, `apply_chat_template` on the same messages
(the same images, decoded before timing), greedy `generate` with the same output length,
one request at a time. It writes both summaries and prints `ratio: N.NN`, the
deployment's best output tok/s over the seed path's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.errors import BenchError
from benchmarks.metrics import summarise
from benchmarks.prepared import PreparedRequest
from benchmarks.records import RequestRecord, write_records
from benchmarks.run import RESULTS, cpu_note, new_folder, resolve_model, run_benchmark, with_seed
from benchmarks.scenario import Scenario, to_yaml
from benchmarks.workload import prepare


def model_folder(deployment: str) -> Path:
    """The local folder the deployment serves (the stand-in is built on demand)."""
    from serve.config import ConfigError, is_local_path, load_config

    try:
        cfg = load_config(deployment)
    except ConfigError as exc:
        raise BenchError(f"baseline: {exc}") from None
    if cfg.stand_in is not None:
        from serve import tiny_model

        return Path(tiny_model.ensure(cfg.stand_in.preset, cfg.stand_in.seed))
    assert cfg.model is not None
    if not is_local_path(cfg.model):
        raise BenchError(
            f"baseline: {cfg.model} is a hub id; the seed path loads a local folder only "
            "(download the weights and set `model:` to the folder)"
        )
    return Path(cfg.model).expanduser()


def hf_messages(openai_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> the processor's format, data-URL images decoded to PIL (pure)."""
    from PIL import Image

    out = []
    for m in openai_messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif part["type"] == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                img = Image.open(io.BytesIO(base64.b64decode(data)))
                img.load()
                parts.append({"type": "image", "image": img})
        out.append({"role": m["role"], "content": parts})
    return out


class SeedPath:
    """transformers generate, as in MedGemma's quick-start notebook."""

    def __init__(self, folder: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub
        import torch
        from transformers import AutoProcessor, Gemma3ForConditionalGeneration

        self.torch = torch
        self.model = Gemma3ForConditionalGeneration.from_pretrained(
            str(folder), dtype=torch.bfloat16
        ).eval()
        self.processor = AutoProcessor.from_pretrained(str(folder))

    def generate(
        self, req: PreparedRequest, scenario: Scenario, messages: list[Any]
    ) -> RequestRecord:
        """One request, timed from the chat template to the decoded text."""
        from transformers.generation.streamers import BaseStreamer

        torch = self.torch
        stamps: list[float] = []

        class Stamps(BaseStreamer):  # generate calls put() once for the prompt, then per token
            def put(self, value: Any) -> None:
                stamps.append(time.perf_counter())

            def end(self) -> None:
                pass

        wall, t0 = time.time(), time.perf_counter()
        try:
            inputs = self.processor.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            ).to(self.model.device, dtype=torch.bfloat16)
            n_in = inputs["input_ids"].shape[-1]
            n = scenario.max_tokens
            fixed = {"min_new_tokens": n} if scenario.fixed_output else {}
            sampling = (
                {"do_sample": True, "temperature": scenario.temperature}
                if scenario.temperature > 0
                else {"do_sample": False}
            )
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs, max_new_tokens=n, streamer=Stamps(), **fixed, **sampling
                )
            generated = out[0][n_in:]
            self.processor.decode(generated, skip_special_tokens=True)
        except Exception as exc:  # noqa: BLE001 - a failed request is a record
            end = time.perf_counter()
            error = f"{type(exc).__name__}: {exc}"[:300]
            return RequestRecord(
                start_s=wall, error=error, latency_s=end - t0, n_images=req.n_images, kind=req.kind
            )
        end = time.perf_counter()
        tokens = stamps[1:]
        return RequestRecord(
            start_s=wall,
            success=bool(tokens),
            error="" if tokens else "generate produced no token",
            status=200,
            ttft_s=tokens[0] - t0 if tokens else None,
            itl_s=[b - a for a, b in zip(tokens, tokens[1:], strict=False)],
            latency_s=end - t0,
            prompt_tokens=int(n_in),
            output_tokens=int(generated.shape[-1]),
            finish_reason="length" if generated.shape[-1] >= n else "stop",
            n_images=req.n_images,
            kind=req.kind,
            level=1.0,
        )


def pick_threads(seed: SeedPath, scenario: Scenario, req: PreparedRequest, msgs: Any) -> int:
    """Warm up with each candidate torch thread count; keep the fastest (not measured)."""
    torch = seed.torch
    candidates = scenario.baseline_threads or sorted({torch.get_num_threads(), 1}, reverse=True)
    seed.generate(req, scenario, msgs)  # first call: lazy initialisation, not timed
    times = {}
    for n in candidates:
        torch.set_num_threads(n)
        times[n] = seed.generate(req, scenario, msgs).latency_s
    best = min(times, key=lambda n: times[n])
    torch.set_num_threads(best)
    print(f"seed path: torch threads {best} (warm-up seconds per request: {times})", flush=True)
    return best


def run_seed_path(scenario: Scenario, model: str, folder: Path) -> dict[str, Any]:
    """The seed path over the scenario's requests, one at a time; writes its records."""
    requests = prepare(scenario, model)
    decoded = [hf_messages(json.loads(r.body)["messages"]) for r in requests]
    seed = SeedPath(model_folder(scenario.deployment))
    threads = pick_threads(seed, scenario, requests[0], decoded[0])
    records = []
    t0 = time.time()
    for i in range(scenario.baseline_requests):
        j = (i + 1) % len(requests)
        records.append(seed.generate(requests[j], scenario, decoded[j]))
    window = time.time() - t0
    write_records(folder / "records.jsonl", records)
    summary = {"level": 1.0, "torch_threads": threads, **summarise(records, window, scenario.slo)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_baseline(
    scenario: Scenario,
    *,
    base_url: str | None = None,
    out_root: Path = RESULTS,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Deployment first, then the seed path; returns and writes baseline.json."""
    from serve.config import ConfigError, load_config
    from serve.launch import LaunchError, ServerProcess, free_port

    scenario = with_seed(scenario)  # the same images for both paths
    model = resolve_model(scenario)
    parent = new_folder(out_root, f"{scenario.name}-baseline")
    (parent / "scenario.yaml").write_text(to_yaml(scenario))
    print(f"baseline: results in {parent}", flush=True)
    if base_url is None:
        try:
            cfg = load_config(scenario.deployment, {**scenario.deployment_set, "port": free_port()})
        except ConfigError as exc:
            raise BenchError(f"baseline: {exc}") from None
        server = ServerProcess(cfg, Path("logs") / f"bench-server-{cfg.port}.log")
        print(f"starting {scenario.deployment} on port {cfg.port} ...", flush=True)
        try:
            server.start()
        except LaunchError as exc:
            raise BenchError(f"the server did not start: {exc}") from None
        try:
            served = run_benchmark(
                scenario, server.base_url, out_root=parent, name="deployment", command=command
            )
        finally:
            server.stop()
        url = server.base_url
    else:
        served = run_benchmark(
            scenario, base_url, out_root=parent, name="deployment", command=command
        )
        url = base_url
    print("seed path: transformers generate, one request at a time ...", flush=True)
    seed_dir = parent / "seed"
    seed_dir.mkdir()
    seed = run_seed_path(scenario, model, seed_dir)
    best = served.summary["best"]
    ratio = best["output_throughput"] / seed["output_throughput"] if seed["completed"] else 0.0
    result = {
        "note": cpu_note(url),
        "deployment": {"folder": str(served.folder), **best},
        "seed": {
            "requests": seed["completed"],
            "output_throughput": seed["output_throughput"],
            "request_throughput": seed["request_throughput"],
            "ttft_p50_ms": seed["ttft_ms"]["p50"],
            "e2e_p50_ms": seed["e2e_ms"]["p50"],
            "torch_threads": seed["torch_threads"],
        },
        "ratio": round(ratio, 3),
    }
    (parent / "baseline.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"deployment best: {best['output_throughput']:.1f} output tok/s at "
        f"{best['level']:g} users ({best['request_throughput']:.2f} req/s); seed path: "
        f"{seed['output_throughput']:.1f} output tok/s ({seed['request_throughput']:.2f} req/s, "
        f"one at a time); {result['note']}"
    )
    print(f"ratio: {ratio:.2f}")
    return result

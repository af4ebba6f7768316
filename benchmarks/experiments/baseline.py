"""The seed baseline: the deployment vs the seed notebook's transformers `generate`, same workload.

`python -m benchmarks baseline --scenario X [--rounds N]` alternates, for N rounds (A B A B
A B; never both at once: they would share the cores), (A) the scenario through the vLLM
deployment (a server started once from the scenario's deployment config on a free port,
idle while the seed path runs, unless --base-url names an idle one), and (B) the seed
notebook's way: `Gemma3ForConditionalGeneration` + `AutoProcessor` from the same model
folder, `apply_chat_template` on the same messages (images decoded before timing), greedy
`generate` with the same output length, one request at a time. Each round's ratio is the
deployment's best output tok/s over the seed path's; the last line is
`ratio: N.NN (median of N rounds; min, max)`. baseline.json keeps every round, the torch
thread count and the CPU model and load average at each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.runner import preflight
from benchmarks.runner.cli import add_scenario_args, needs_images, reported, scenario_from_args
from benchmarks.runner.errors import BenchError
from benchmarks.runner.machine import machine_state
from benchmarks.runner.metrics import spread, summarise
from benchmarks.runner.prepared import PreparedRequest
from benchmarks.runner.records import RequestRecord, write_records
from benchmarks.runner.run import (
    RESULTS,
    cpu_note,
    new_folder,
    run_benchmark,
    served_model,
    with_seed,
)
from benchmarks.runner.scenario import Scenario, to_yaml
from benchmarks.runner.workload import prepare
from serve.verify.reference import hf_messages as reference_messages


def model_folder(deployment: str, overrides: dict[str, Any] | None = None) -> tuple[Path, str]:
    """The local folder the deployment serves (the stand-in is built on demand) and the
    dtype it runs in on this machine."""
    from serve.command.argv import for_host
    from serve.config.deployment import ConfigError, is_local_path, load_config
    from serve.host import host_cpu
    from serve.launch.server import model_to_load

    try:
        cfg = for_host(load_config(deployment, overrides), host_cpu()["flags"])
    except ConfigError as exc:
        raise BenchError(f"baseline: {exc}") from None
    dtype = "bfloat16" if cfg.dtype == "auto" else cfg.dtype
    model = model_to_load(cfg)
    if not is_local_path(model):
        raise BenchError(
            f"baseline: {model} is a hub id; the seed path loads a local folder only "
            "(download the weights and set `model:` to the folder)"
        )
    return Path(model).expanduser(), dtype


def hf_messages(openai_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> the processor's format with each image inline as a PIL
    image, as MedGemma's quick-start notebook passes them (the verify reference's
    conversion, serve.verify.reference.hf_messages, with its images put back in place)."""
    messages, images = reference_messages(openai_messages)
    pictures = iter(images)
    return [
        {
            **m,
            "content": [
                {"type": "image", "image": next(pictures)} if part["type"] == "image" else part
                for part in m["content"]
            ],
        }
        for m in messages
    ]


class SeedPath:
    """transformers generate, as in MedGemma's quick-start notebook."""

    def __init__(self, folder: Path, dtype: str = "bfloat16") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub
        import torch
        from transformers import AutoProcessor, Gemma3ForConditionalGeneration

        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.model = Gemma3ForConditionalGeneration.from_pretrained(
            str(folder), dtype=self.dtype
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
            ).to(self.model.device, dtype=self.dtype)
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


def run_seed_path(
    seed: SeedPath, scenario: Scenario, model: str, folder: Path, threads: int
) -> dict[str, Any]:
    """The seed path over the scenario's requests, one at a time; writes its records."""
    requests = prepare(scenario, model)
    decoded = [hf_messages(json.loads(r.body)["messages"]) for r in requests]
    records = []
    t0 = time.time()
    for i in range(scenario.baseline_requests):
        j = (i + 1) % len(requests)
        records.append(seed.generate(requests[j], scenario, decoded[j]))
    window = time.time() - t0
    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "records.jsonl", records)
    summary = {"level": 1.0, "torch_threads": threads, **summarise(records, window, scenario.slo)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def round_result(served: dict[str, Any], seed: dict[str, Any]) -> dict[str, Any]:
    """One round's figures from the deployment's overall summary and the seed path's (pure).

    `ratio` is the deployment's best output tok/s over the seed path's; `one_user_ratio`
    compares req/s at one user (the deployment's level 1, if it ran one)."""
    best = served["best"]
    seed_tok, seed_req = seed["output_throughput"], seed["request_throughput"]
    one = next((lv for lv in served["levels"] if lv["level"] == 1), None)
    return {
        "deployment_best_level": best["level"],
        "deployment_output_tok_s": best["output_throughput"],
        "deployment_req_s": best["request_throughput"],
        "deployment_one_user_req_s": one["request_throughput"] if one else None,
        "seed_output_tok_s": seed_tok,
        "seed_req_s": seed_req,
        "ratio": round(best["output_throughput"] / seed_tok, 3) if seed_tok else None,
        "one_user_ratio": (
            round(one["request_throughput"] / seed_req, 3) if one and seed_req else None
        ),
    }


def run_baseline(
    scenario: Scenario,
    *,
    base_url: str | None = None,
    rounds: int = 3,
    out_root: Path = RESULTS,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Alternate the deployment and the seed path for `rounds` rounds (A B A B ...), never
    both at once; returns and writes baseline.json. Each round draws new images (the seed
    plus the round number) so that no round hits an image the server cached earlier."""
    from serve.launch.server import ServerProcess
    from serve.process import free_port

    if rounds < 1:
        raise BenchError(f"--rounds must be at least 1 (got {rounds})")
    scenario = with_seed(scenario)
    model = served_model(scenario)
    folder, dtype = model_folder(scenario.deployment, scenario.deployment_set)  # hub id: fails
    server: ServerProcess | None = None
    url = base_url
    if url is None:
        server = preflight.start_deployment(scenario, free_port())
        url = server.base_url
    try:
        preflight.check_server(url, os.environ.get(scenario.api_key_env) or None, model)
        parent = new_folder(out_root, f"{scenario.name}-baseline")
        (parent / "scenario.yaml").write_text(to_yaml(scenario))
        print(f"baseline: results in {parent}", flush=True)
        print(f"seed path: loading transformers on the same weights ({dtype}) ...", flush=True)
        seed = SeedPath(folder, dtype)
        first = prepare(scenario, model)[0]
        threads = pick_threads(
            seed, scenario, first, hf_messages(json.loads(first.body)["messages"])
        )
        results = []
        for r in range(1, rounds + 1):
            round_scenario = scenario.model_copy(update={"seed": (scenario.seed or 0) + r})
            before = machine_state()
            print(f"round {r}/{rounds}: deployment ...", flush=True)
            served = run_benchmark(
                round_scenario, url, out_root=parent, name=f"round{r}-deployment",
                command=command, quiet=True,
            )  # fmt: skip
            between = machine_state()
            print(f"round {r}/{rounds}: seed path (transformers generate, one at a time) ...")
            seed_sum = run_seed_path(
                seed, round_scenario, model, parent / f"round{r}-seed", threads
            )
            figures = round_result(served.summary, seed_sum)
            results.append(
                {
                    "round": r,
                    "deployment_folder": str(served.folder),
                    **figures,
                    "machine": {"deployment": before, "seed": between, "end": machine_state()},
                }
            )
            print(
                f"round {r}: deployment {figures['deployment_output_tok_s']:.1f} tok/s at "
                f"{figures['deployment_best_level']:g} users, seed path "
                f"{figures['seed_output_tok_s']:.1f} tok/s: ratio {figures['ratio']:.2f} "
                f"(load average {before['loadavg'][0]:.2f} / {between['loadavg'][0]:.2f})",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()
    ratio = spread([x["ratio"] for x in results])
    one_user = spread([x["one_user_ratio"] for x in results])
    result = {
        "note": cpu_note(url),
        "scenario": scenario.name,
        "torch_threads": threads,
        "dtype": dtype,
        "rounds": results,
        "ratio": ratio,
        "one_user_ratio": one_user,
    }
    (parent / "baseline.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['note']}; rounds alternate deployment and seed path, never both at once")
    if one_user["median"] is not None:
        print(
            f"one user: deployment req/s over seed req/s, median {one_user['median']:.2f} "
            f"(min {one_user['min']:.2f}, max {one_user['max']:.2f})"
        )
    if ratio["median"] is None:
        raise BenchError(f"no round produced a ratio (the seed path failed); see {parent}")
    print(
        f"ratio: {ratio['median']:.2f} (median of {ratio['rounds']} rounds; "
        f"min {ratio['min']:.2f}, max {ratio['max']:.2f})"
    )
    return result


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    add_scenario_args(parser)
    parser.add_argument(
        "--base-url", help="use this running server (it must be idle) instead of starting one"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of deployment then seed path, alternated (default 3: A B A B A B)",
    )


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks baseline`."""
    return reported(
        lambda: run_baseline(
            needs_images(scenario_from_args(args), "baseline"),
            base_url=args.base_url,
            rounds=args.rounds,
            out_root=args.out,
            command=args.command_line,
        )
    )

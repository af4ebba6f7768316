# ruff: noqa: E501  (py-spy stack lines are long by nature)
"""The profile's pure parts: py-spy stacks -> stages -> CPU ms per request, flame layout,
round summaries of the baseline and A/B experiments, and the machine's CPU facts."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.experiments import stages
from benchmarks.experiments.baseline import round_result
from benchmarks.experiments.flame import flame_boxes
from benchmarks.experiments.profile import sampled_interval
from benchmarks.runner.metrics import spread
from serve.host import cpu_info, resolved_dtype

RAW = """\
main (x.py:1);GPUModelRunner.execute_model (gpu_model_runner.py:9);GPUModelRunner._model_forward (gpu_model_runner.py:3645);Runner.call (c.py:5) 60
main (x.py:1);GPUModelRunner.execute_model (gpu_model_runner.py:9);GPUModelRunner._preprocess (gpu_model_runner.py:2);GPUModelRunner._execute_mm_encoder (gpu_model_runner.py:3) 30
main (x.py:1);WorkerProc.worker_busy_loop (m.py:1);MessageQueue.acquire_read (shm_broadcast.py:864);SpinCondition.wait (shm_broadcast.py:210);Poller.poll (zmq/sugar/poll.py:106) 10
Thread._bootstrap (threading.py:1002);TMonitor.run (tqdm/_monitor.py:69);Condition.wait (threading.py:331) 500
not a stack line
"""


def test_parse_collapsed_counts_samples_per_stack_and_skips_junk() -> None:
    stacks = stages.parse_collapsed(RAW)
    assert sum(stacks.values()) == 600
    assert len(stacks) == 4
    assert stacks[("Thread._bootstrap (threading.py:1002)", "TMonitor.run (tqdm/_monitor.py:69)",
                   "Condition.wait (threading.py:331)")] == 500  # fmt: skip


def test_worker_stages_busy_poll_before_idle_and_idle_on_the_leaf_only() -> None:
    samples = stages.stage_samples(stages.parse_collapsed(RAW), stages.WORKER)
    assert samples == Counter(
        {
            "language model forward (prefill + decode)": 60,
            "vision tower": 30,
            "waiting on the engine (busy poll)": 10,  # spins in zmq poll: not idle
            stages.IDLE: 500,
        }
    )
    # a frame that merely passes through threading is not idle when work is below it
    busy = ["Thread.run (threading.py:982)", "ImageProcessor.resize (image_processing_x.py:3)"]
    assert stages.classify(busy, stages.API_SERVER).startswith("multimodal processor")
    assert stages.classify([], stages.API_SERVER) == stages.IDLE
    zmq_gc = [
        "Thread._bootstrap (threading.py:1002)",
        "GarbageCollectorThread.run (zmq/utils/garbage.py:47)",
    ]
    assert stages.classify(zmq_gc, stages.API_SERVER) == stages.IDLE
    assert stages.classify(["mystery (m.py:1)"], stages.API_SERVER) == stages.OTHER


def test_stage_cpu_splits_kernel_cpu_time_over_busy_samples() -> None:
    samples = stages.stage_samples(stages.parse_collapsed(RAW), stages.WORKER)
    worker = stages.ProcessProfile("worker", cpu_s=10.0, samples=samples)
    # 10 s over 20 requests = 500 ms each, split 60:30:10 over the 100 busy samples
    assert worker.stage_cpu_ms(20) == {
        "language model forward (prefill + decode)": 300.0,
        "vision tower": 150.0,
        "waiting on the engine (busy poll)": 50.0,
    }
    assert worker.stage_cpu_ms(0) == {}


def test_summarise_processes_adds_processes_of_a_kind_and_gives_shares() -> None:
    w1 = stages.ProcessProfile("worker", 3.0, Counter({"vision tower": 1}))
    w2 = stages.ProcessProfile("worker", 3.0, Counter({"sampling": 1}))
    api = stages.ProcessProfile("api_server", 2.0, Counter({"SSE and HTTP": 4}))
    out = stages.summarise_processes([w1, w2, api], requests=10, window_s=4.0)
    assert out["worker"]["cpu_s"] == 6.0
    assert out["worker"]["share"] == 0.75
    assert out["worker"]["cores"] == 1.5
    assert out["worker"]["cpu_ms_per_request"] == 600.0
    assert out["worker"]["stages_ms_per_request"] == {"vision tower": 300.0, "sampling": 300.0}
    assert out["api_server"]["share"] == 0.25


def test_sampling_follows_locusts_clock_not_the_levels_launch() -> None:
    # Locust began 9 s after the level was launched (a loaded machine): the sampled
    # interval still lies inside its run, after its 3 s warm-up
    window = {"start": 1009.0, "warmup_end": 1012.0}
    assert sampled_interval(window, duration_s=14) == (1013.0, 8)
    # a short run still samples 5 s
    assert sampled_interval({"start": 0.0, "warmup_end": 2.0}, duration_s=6) == (3.0, 5)


def test_flame_boxes_merge_common_prefixes() -> None:
    stacks = {("a", "b"): 3, ("a", "c"): 2, ("d",): 5}
    boxes = {(b.depth, b.label): (b.start, b.width) for b in flame_boxes(stacks)}
    assert boxes == {
        (0, "a"): (0, 5),
        (1, "b"): (0, 3),
        (1, "c"): (3, 2),
        (0, "d"): (5, 5),
    }


def test_spread_is_median_min_max_of_the_rounds() -> None:
    assert spread([2.0, None, 5.0, 3.0]) == {"median": 3.0, "min": 2.0, "max": 5.0, "rounds": 3}
    assert spread([1.0, 2.0]) == {"median": 1.5, "min": 1.0, "max": 2.0, "rounds": 2}
    assert spread([None])["median"] is None


def test_round_result_ratio_and_one_user_ratio() -> None:
    served = {
        "best": {"level": 64.0, "output_throughput": 200.0, "request_throughput": 3.125},
        "levels": [
            {"level": 1.0, "request_throughput": 1.5, "output_throughput": 96.0},
            {"level": 64.0, "request_throughput": 3.125, "output_throughput": 200.0},
        ],
    }
    seed = {"output_throughput": 50.0, "request_throughput": 0.75}
    r = round_result(served, seed)
    assert r["ratio"] == 4.0
    assert r["one_user_ratio"] == 2.0
    assert (
        round_result(served, {"output_throughput": 0.0, "request_throughput": 0.0})["ratio"] is None
    )


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        ("fpu avx2 fma", "float32"),
        ("avx2 avx512f avx512_bf16", "bfloat16"),
        ("avx2 amx_tile amx_bf16", "bfloat16"),
    ],
)  # fmt: skip
def test_auto_dtype_on_the_cpu_follows_native_bf16(flags: str, dtype: str) -> None:
    text = f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags : sse\n"
    info = cpu_info(text)
    assert info == {"cpu_model": "AMD EPYC", "flags": frozenset(flags.split())}
    assert resolved_dtype("auto", "cpu", info["flags"]) == dtype
    assert resolved_dtype("bfloat16", "cpu", info["flags"]) == "bfloat16"  # explicit wins
    assert resolved_dtype("auto", "cuda", info["flags"]) == "auto"  # vLLM's own auto

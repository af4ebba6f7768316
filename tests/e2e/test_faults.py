"""Faults: the engine process is killed mid-load under `python -m serve` with a restart
policy; the launcher restarts the server (removing the shared memory the killed engine left),
clients that retry finish every request, and the batch client resumes with nothing lost or
duplicated. Then SIGTERM: in-flight requests finish within the drain timeout.

The server is the session's `launcher` (tests/e2e/conftest.py, HTTPS, a restart policy):
the kill test uses its one restart and the drain test stops it, so both are `destructive`
and run after the launcher's other tests, the kill first; a test after the drain gets a
fresh one.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from serve.shared_memory import shared_memory_of
from tests.conftest import REPO
from tests.e2e.launcher import LiveServer, engine_core, wait_until
from tests.images import chest_like_png

pytestmark = pytest.mark.slow
N_REQUESTS = 24
N_STUDIES = 24


def chat_with_retries(client: openai.OpenAI, model: str, i: int, deadline: float) -> dict:
    """One request, retried on connection errors and 5xx until `deadline`: what a client
    of a supervised deployment does. Returns what it took."""
    attempts, errors = 0, []
    while True:
        attempts += 1
        try:
            r = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"Study {i}: describe this X-ray"}],
                max_tokens=16,
                temperature=0,
            )
            return {
                "i": i,
                "attempts": attempts,
                "tokens": r.usage.completion_tokens,
                "errors": errors,
            }
        except (openai.APIConnectionError, openai.InternalServerError) as exc:
            errors.append(type(exc).__name__)
            if time.monotonic() > deadline:
                raise
            time.sleep(1)  # a client's back-off between retries


def make_studies(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_STUDIES):
        (folder / f"study{i:02d}.png").write_bytes(chest_like_png(256, seed=i))
    return folder


def batch(run: LiveServer, studies: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "clients", "batch", str(studies), "--task", "findings"]
        + ["--out", str(out), "--concurrency", "2", "--max-tokens", "64", "--no-progress"]
        + ["--base-url", run.base_url, "--model", run.model],
        cwd=REPO,
        env=run.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


@pytest.mark.destructive("restarts")
def test_engine_killed_mid_load_is_restarted_and_nothing_is_lost(
    launcher: LiveServer, tmp_path: Path
) -> None:
    run = launcher
    assert run.proc is not None
    client = run.get_client(timeout=60)
    studies, out = make_studies(tmp_path / "studies"), tmp_path / "results.jsonl"
    victim = engine_core(run.proc.pid)
    assert victim is not None, f"no EngineCore process under the launcher {run.proc.pid}"
    done = threading.Semaphore(0)
    deadline = time.monotonic() + 900

    def one(i: int) -> dict:
        result = chat_with_retries(client, run.model, i, deadline)
        done.release()
        return result

    first_batch = batch(run, studies, out)
    wait_until(  # the batch is under way
        lambda: out.exists() and len(out.read_text().splitlines()) >= 2,
        300,
        f"the batch wrote fewer than 2 lines to {out}",
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(one, i) for i in range(N_REQUESTS)]
        for _ in range(4):  # mid-load: some requests done, most still to come
            assert done.acquire(timeout=300), "no request completed before the kill"
        # vLLM's message queue between the engine and its worker (Python shared memory)
        segments = {p for p in shared_memory_of(victim.pid) if p.name.startswith("psm_")}
        assert segments, f"no shared memory mapped by the EngineCore {victim.pid}"
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]
    first_batch_output = first_batch.communicate(timeout=900)[0]

    # The launcher noticed, restarted, and said how long it took.
    assert run.proc.poll() is None, run.text()[-3000:]
    restarted = r"restart 1: the server is ready again after ([\d.]+) s down"
    said = wait_until(
        lambda: re.search(restarted, run.text()),
        900,
        lambda: f"{restarted!r} not in the launcher's output:\n{run.text()[-3000:]}",
    )
    print(
        f"\nrestart time: {float(said[1]):.1f} s (launcher), "
        f"{time.monotonic() - killed_at:.1f} s from the kill to the last request"
    )
    new_engine = engine_core(run.proc.pid)
    assert new_engine is not None and new_engine.pid != victim.pid, run.text()[-3000:]
    # The killed engine could not unlink its shared memory: the launcher did, on restart.
    assert not [p for p in segments if p.exists()], segments

    # Every request finished, once each, some of them only thanks to retries.
    assert sorted(r["i"] for r in results) == list(range(N_REQUESTS)), results
    assert all(r["tokens"] >= 1 for r in results), results
    assert any(r["attempts"] > 1 for r in results), "no request saw the fault"

    # The batch run stopped when the server went away, with part of the studies done; a
    # rerun does the rest, once each, and leaves the finished ones as they were.
    assert first_batch.returncode != 0, first_batch_output
    first_ok = {r["id"]: r for r in records(out) if r["status"] == "ok"}
    assert 2 <= len(first_ok) < N_STUDIES, (len(first_ok), first_batch_output)
    rerun = batch(run, studies, out)
    rerun_output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, rerun_output
    final = records(out)
    ids = [r["id"] for r in final]
    assert sorted(ids) == sorted(p.name for p in studies.iterdir()), ids  # none lost, no dupes
    assert all(r["status"] == "ok" for r in final), final
    assert all(r == first_ok[r["id"]] for r in final if r["id"] in first_ok), "a done study redone"
    retried = sum(r["attempts"] > 1 for r in results)
    print(
        f"fault run: {N_REQUESTS}/{N_REQUESTS} requests completed ({retried} after retries), "
        f"batch {len(first_ok)}/{N_STUDIES} studies before the kill, {len(final)}/{N_STUDIES} "
        "after the rerun, 0 lost, 0 duplicated"
    )


def test_sighup_to_one_server_is_refused_and_it_keeps_serving(launcher: LiveServer) -> None:
    """SIGHUP restarts replicas one at a time; one server has no second to serve meanwhile,
    so the launcher says so and goes on (SIGHUP's default would end it and orphan vLLM)."""
    run = launcher
    assert run.proc is not None
    before = run.text().count("SIGHUP ignored")
    run.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: run.text().count("SIGHUP ignored") > before,
        30,
        lambda: f"no 'SIGHUP ignored' line:\n{run.text()[-2000:]}",
        interval_s=0.2,
    )
    assert run.running(), run.text()[-2000:]
    answer = run.get_client().chat.completions.create(
        model=run.model, messages=[{"role": "user", "content": "Still there?"}], max_tokens=4
    )
    assert answer.choices[0].finish_reason in ("stop", "length"), answer


@pytest.mark.destructive("stops")
def test_sigterm_drains_in_flight_requests(launcher: LiveServer) -> None:
    """SIGTERM to the launcher while four long streamed answers are being generated: each
    finishes in full (all its tokens, finish_reason length), and the launcher exits 0."""
    run = launcher
    assert run.proc is not None and run.log_path is not None
    client = run.get_client()
    max_tokens = 1000
    started = threading.Barrier(5)

    def long_stream(i: int) -> tuple[int, str | None]:
        stream = client.chat.completions.create(
            model=run.model,
            messages=[{"role": "user", "content": f"Study {i}: describe this X-ray"}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        tokens, finish, first = 0, None, True
        for chunk in stream:
            if first and chunk.choices:
                first = False
                started.wait(timeout=300)  # every stream is generating: now the SIGTERM
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return tokens, finish

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(long_stream, i) for i in range(4)]
        started.wait(timeout=300)
        t0 = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        done = [f.result() for f in futures]
        code = run.proc.wait(timeout=120)
    assert done == [(max_tokens, "length")] * 4, (done, run.text()[-3000:])
    assert code == 0, run.text()[-3000:]
    assert "mode=drain timeout=60s" in run.log_path.read_text(), run.text()[-3000:]
    print(
        f"\ndrain: 4 x {max_tokens} tokens finished; the launcher exited "
        f"{time.monotonic() - t0:.1f} s after SIGTERM"
    )

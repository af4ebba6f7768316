"""Faults: the engine process is killed mid-load under `python -m serve` with a restart
policy; the launcher restarts the server, clients that retry finish every request, and the
batch client resumes with nothing lost or duplicated. Then SIGTERM: in-flight requests
finish within the drain timeout.

The server is the session's `supervised` launcher (tests/e2e/conftest.py): one restart
here, and the drain test, last, stops it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import psutil
import pytest

from tests.e2e.launcher import REPO, Launched
from tests.images import chest_like_png

pytestmark = pytest.mark.slow
MODEL = "tiny-medgemma-random-weights"
N_REQUESTS = 24
N_STUDIES = 24


def engine_core(launcher_pid: int) -> psutil.Process:
    """The EngineCore process under the launcher (vLLM names it via setproctitle)."""
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no EngineCore process under the launcher {launcher_pid}")


def chat_with_retries(client: openai.OpenAI, i: int, deadline: float) -> dict:
    """One request, retried on connection errors and 5xx until `deadline`: what a client
    of a supervised deployment does. Returns what it took."""
    attempts, errors = 0, []
    while True:
        attempts += 1
        try:
            r = client.chat.completions.create(
                model=MODEL,
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
            time.sleep(1)


def make_studies(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_STUDIES):
        (folder / f"study{i:02d}.png").write_bytes(chest_like_png(256, seed=i))
    return folder


def batch(run: Launched, studies: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "clients", "batch", str(studies), "--task", "findings"]
        + ["--out", str(out), "--concurrency", "2", "--max-tokens", "64", "--no-progress"]
        + ["--base-url", run.base_url, "--model", MODEL],
        cwd=REPO,
        env={**os.environ, "MEDGEMMA_API_KEY": run.api_key},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_engine_killed_mid_load_is_restarted_and_nothing_is_lost(
    supervised: Launched, tmp_path: Path
) -> None:
    run = supervised
    client = openai.OpenAI(base_url=run.base_url, api_key=run.api_key, max_retries=0, timeout=60)
    studies, out = make_studies(tmp_path / "studies"), tmp_path / "results.jsonl"
    victim = engine_core(run.proc.pid)
    done = threading.Semaphore(0)
    deadline = time.monotonic() + 900

    def one(i: int) -> dict:
        result = chat_with_retries(client, i, deadline)
        done.release()
        return result

    first_batch = batch(run, studies, out)
    wait_for_lines(out, 2, timeout_s=300)  # the batch is under way
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(one, i) for i in range(N_REQUESTS)]
        for _ in range(4):  # mid-load: some requests done, most still to come
            assert done.acquire(timeout=300), "no request completed before the kill"
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]
    first_batch_output = first_batch.communicate(timeout=900)[0]

    # The launcher noticed, restarted, and said how long it took.
    assert run.proc.poll() is None, run.text()[-3000:]
    said = wait_for_text(run, r"restart 1: the server is ready again after ([\d.]+) s down", 900)
    print(
        f"\nrestart time: {float(said[1]):.1f} s (launcher), "
        f"{time.monotonic() - killed_at:.1f} s from the kill to the last request"
    )
    assert engine_core(run.proc.pid).pid != victim.pid

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


def test_sigterm_drains_in_flight_requests(supervised: Launched) -> None:
    """SIGTERM to the launcher while four long streamed answers are being generated: each
    finishes in full (all its tokens, finish_reason length), and the launcher exits 0."""
    run = supervised
    client = openai.OpenAI(base_url=run.base_url, api_key=run.api_key, max_retries=0, timeout=300)
    max_tokens = 1000
    started = threading.Barrier(5)

    def long_stream(i: int) -> tuple[int, str | None]:
        stream = client.chat.completions.create(
            model=MODEL,
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
    assert "mode=drain timeout=60s" in run.server_log.read_text(), run.text()[-3000:]
    print(
        f"\ndrain: 4 x {max_tokens} tokens finished; the launcher exited "
        f"{time.monotonic() - t0:.1f} s after SIGTERM"
    )


def wait_for_text(run: Launched, pattern: str, timeout_s: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, run.text())
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{pattern!r} not in the launcher's output:\n{run.text()[-3000:]}")


def wait_for_lines(path: Path, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} had fewer than {n} lines after {timeout_s} s")

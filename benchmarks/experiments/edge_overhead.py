"""What the edge (nginx + its key check, serve.edge) adds in front of vllm-router:
alternating rounds of A (the router on loopback, with the replicas' internal key) and B
(the edge, with a service key) on one running replicas deployment.

    flock /tmp/server.lock python -m benchmarks.experiments.edge_overhead \\
        [--config configs/deployments/cpu-tiny-2replicas.yaml] [--rounds 3]

Each round, per arm: `--requests` sequential GET /v1/models (the router forwards them to a
replica: the lightest round trip; p50 and p90 in ms), then `--threads` clients sending
text-only chat requests (max_tokens 1) back to back for `--seconds` s (req/s, a
saturation figure). Prints every round with the load average, then the medians: B - A
p50 (ms) and B/A req/s. Server and clients share the machine's cores.

`--image`: each saturation request also carries one 384 px greyscale PNG (drawn from 64
distinct ones made before the rounds, after a line naming the request so that vLLM's
prefix cache never skips an image's encoding), the product's usual request; without it, the
lightest chat request there is (the edge's worst case: its per-request cost is the
largest share).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.runner.cli import module_main
from serve.auth.keys import KeysTable, add_service, new_key, write_keys_file
from serve.config.deployment import load_config
from serve.process import free_port, port_in_use, terminate

CONFIG = Path("configs/deployments/cpu-tiny-2replicas.yaml")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(base: str, key: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        http.get("/v1/models").raise_for_status()  # a warm connection
        for _ in range(n):
            t0 = time.perf_counter()
            http.get("/v1/models").raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def image_urls(n: int, side: int = 384) -> list[str]:
    """`n` distinct greyscale PNGs of random pixels as data URLs (seeded: the same every run)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    urls = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(buf, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return urls


def chat_body(model: str, image: str | None, n: int) -> dict[str, object]:
    """Request `n` of a saturation run (pure): text only, or `image` after a line naming the
    request, so that no two image requests share a prompt prefix (vLLM's prefix cache would
    otherwise skip the image's encoding the second time the pool comes round)."""
    if image is None:
        return {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    content = [
        {"type": "text", "text": f"Case {n}."},
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "text", "text": "Describe this X-ray."},
    ]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 1}


def saturation(
    base: str, key: str, model: str, images: list[str], threads: int, seconds: float
) -> tuple[float, int]:
    """(req/s, failed) of `threads` clients sending chat requests (with `images` in turn,
    if any) for `seconds`."""
    done, failed, lock = [0], [0], threading.Lock()
    end = time.monotonic() + seconds

    def client(first: int) -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as http:
            i = first
            while time.monotonic() < end:
                body = chat_body(model, images[i % len(images)] if images else None, i)
                i += threads
                ok = http.post("/v1/chat/completions", json=body).status_code == 200
                with lock:
                    done[0] += ok
                    failed[0] += not ok

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return done[0] / (time.monotonic() - t0), failed[0]


def wait_ready(out: Path, proc: subprocess.Popen[bytes], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "base URL:" in out.read_text():
            return
        if proc.poll() is not None:
            err = out.with_suffix(".err")
            said = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
            why = f": {said[-1]}" if said else ""
            code = proc.returncode
            raise SystemExit(f"error: python -m serve exited with {code}{why}; see {err}")
        time.sleep(0.5)
    raise SystemExit("error: the deployment was not ready in time")


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=CONFIG, help="a replicas deployment config")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=200, help="sequential requests per arm")
    p.add_argument("--threads", type=int, default=8, help="saturation clients per arm")
    p.add_argument("--seconds", type=float, default=20, help="saturation seconds per arm")
    p.add_argument("--image", action="store_true", help="saturation requests carry one image each")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    images = image_urls(64) if args.image else []
    port = free_port()
    while any(port_in_use("127.0.0.1", port + k) for k in range(6)):  # edge .. key check
        port = free_port()
    work = Path(tempfile.mkdtemp(prefix="edge-ab-"))
    service_key = new_key()
    table = add_service(KeysTable(), "bench", service_key, "2026-12-07T00:00:00Z")
    write_keys_file(work / "keys.json", table)
    out = work / "launcher.out"
    cmd = [sys.executable, "-m", "serve", "--config", str(args.config), "--port", str(port)]
    cmd += ["--log-file", str(work / "server.log"), "--set", f"auth.keys_file={work / 'keys.json'}"]
    with open(out, "wb") as o, open(work / "launcher.err", "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, start_new_session=True)
    try:
        wait_ready(out, proc)
        conf = (work / f"edge-{port}" / "nginx.conf").read_text()
        found = re.search(r'Authorization "Bearer ([A-Za-z0-9_-]+)"', conf)
        assert found is not None
        arms = {
            "A": (f"http://127.0.0.1:{port + 4}", found[1]),  # vllm-router alone
            "B": (f"http://127.0.0.1:{port}", service_key),  # the edge in front of it
        }
        print(
            f"edge A/B on {args.config} ({os.cpu_count()} CPU cores shared by server and clients)"
        )
        what = "one image + text" if args.image else "text only"
        rows: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
        for r in range(1, args.rounds + 1):
            for arm, (base, key) in arms.items():
                load = os.getloadavg()[0]
                lat = latencies(base, key, args.requests)
                rps, failed = saturation(
                    base, key, cfg.model_name, images, args.threads, args.seconds
                )
                p50, p90 = percentile(lat, 0.5), percentile(lat, 0.9)
                rows[arm].append((p50, p90, rps))
                print(
                    f"round {r} {arm}: p50 {p50:.2f} ms, p90 {p90:.2f} ms ({args.requests} "
                    f"GET /v1/models); {rps:.2f} req/s ({args.threads} clients, {what}, "
                    f"{args.seconds:.0f} s, {failed} failed); load average {load:.2f}",
                    flush=True,
                )
        diffs = [b[0] - a[0] for a, b in zip(rows["A"], rows["B"], strict=True)]
        ratios = [b[2] / a[2] for a, b in zip(rows["A"], rows["B"], strict=True) if a[2] > 0]
        print(
            f"median p50: A {statistics.median(x[0] for x in rows['A']):.2f} ms, "
            f"B {statistics.median(x[0] for x in rows['B']):.2f} ms; B - A p50: "
            f"{statistics.median(diffs):+.2f} ms (rounds: {', '.join(f'{d:+.2f}' for d in diffs)})"
        )
        print(
            f"B/A req/s: {statistics.median(ratios):.3f}x (rounds: "
            f"{', '.join(f'{x:.3f}' for x in ratios)}); load average now {os.getloadavg()[0]:.2f}"
        )
    finally:
        terminate(proc, 120)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("benchmarks.experiments.edge_overhead", add_cli_args, main, __doc__))

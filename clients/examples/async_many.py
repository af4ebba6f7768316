"""Many images at once with the async client: the server batches concurrent requests.

python -m clients.examples.async_many img1.png img2.dcm ...
"""

from __future__ import annotations

import asyncio
import sys
import time

from clients.chat import MedGemmaClient


async def main(paths: list[str]) -> None:
    async with MedGemmaClient() as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(client.arun_task("findings", [p], max_tokens=32) for p in paths),
            return_exceptions=True,  # one bad file does not sink the others
        )
        elapsed = time.perf_counter() - t0
    for path, r in zip(paths, results, strict=True):
        if isinstance(r, BaseException):
            print(f"{path}: failed: {r}")
        else:
            print(f"{path}: {r.usage['prompt_tokens']} prompt tokens, {r.latency_s:.2f}s")
    print(f"{len(paths)} requests in {elapsed:.2f}s")


asyncio.run(main(sys.argv[1:]))

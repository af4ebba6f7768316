"""Findings for one image or DICOM file, streamed as they are generated (this package).

    python -m clients.examples.stream_findings chest.dcm

Settings come from MEDGEMMA_BASE_URL / MEDGEMMA_API_KEY / MEDGEMMA_MODEL. The image is
decoded (DICOM: rescale + window, MONOCHROME1 inverted) and downscaled to 896 px here.
"""

from __future__ import annotations

import sys

from clients.chat import MedGemmaClient
from clients.tasks import TASKS

client = MedGemmaClient()  # reads MEDGEMMA_* from the environment
request = TASKS["findings"].build([sys.argv[1]], max_tokens=64)

stream = client.stream(request.messages, **request.params)
for delta in stream:
    print(delta, end="", flush=True)
print()

result = stream.result
assert result is not None
print(f"finish_reason={result.finish_reason} usage={result.usage}", file=sys.stderr)
print(f"latency={result.latency_s:.2f}s", file=sys.stderr)

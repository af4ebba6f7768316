"""Does a report agree with its image? A typed answer through structured output.

    python -m clients.examples.consistency_check chest.png "No acute findings."

vLLM constrains decoding to the JSON schema of ConsistencyCheck; the answer is then
validated with pydantic (SchemaError if it does not match, e.g. cut off by max_tokens).
"""

from __future__ import annotations

import sys

from clients.chat import MedGemmaClient
from clients.errors import SchemaError
from clients.tasks import ConsistencyCheck

image, report = sys.argv[1], sys.argv[2]
client = MedGemmaClient()

try:
    result = client.run_task("consistency", [image], report=report)
except SchemaError as exc:
    sys.exit(f"no valid answer: {exc}")

check = result.parsed
assert isinstance(check, ConsistencyCheck)
print(f"consistent: {check.consistent} (confidence {check.confidence:.2f})")
for d in check.discrepancies:
    print(f"- {d[:80]}")

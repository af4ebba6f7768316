"""Does a report agree with its image? A typed answer through structured output.

    python -m clients.examples.consistency_check chest.png "No acute findings."

vLLM constrains decoding to the JSON schema of ConsistencyCheck; the answer is then
validated with pydantic (SchemaError if it does not match, e.g. cut off by max_tokens).
"""

from __future__ import annotations

import sys

from clients import chat
from clients.errors import SchemaError
from clients.run import run_task
from clients.tasks import ConsistencyCheck

image, report = sys.argv[1], sys.argv[2]
client = chat.make_client()

try:
    result = run_task(client, "consistency", [image], report=report)
except SchemaError as exc:
    sys.exit(f"no valid answer: {exc}")

check = result.parsed
assert isinstance(check, ConsistencyCheck)
print(f"consistent: {check.consistent} (confidence {check.confidence:.2f})")
for d in check.discrepancies:
    print(f"- {d[:80]}")

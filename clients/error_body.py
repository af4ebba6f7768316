"""The message in an error response body, whatever its shape (pure, standard library only).

One reader for every place that shows a server's error: the CLI (`clients.__main__`), the
benchmark's records and load generator, and its pre-flight probe. It lives apart from
`clients.errors`, which imports the openai SDK, so that the load generator need not.
"""

from __future__ import annotations

import json


def error_message(body: object) -> str | None:
    """The message of an error body, or None if it holds none. Reads vLLM's and OpenAI's
    `{"error": {"message": ...}}`, `{"error": "text"}` (vLLM's 401), a bare
    `{"message": ...}` (what the openai SDK keeps as `APIStatusError.body`), FastAPI's
    `{"detail": ...}`, and plain text. `body` is parsed JSON or a response's raw bytes or
    text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            return text or None
        return error_message(parsed) if isinstance(parsed, dict) else text or None
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    if isinstance(inner, dict):
        return error_message(inner)
    if isinstance(inner, str) and inner.strip():
        return inner.strip()
    for key in ("message", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if value:
            return json.dumps(value)
    return None

"""The running server's answer to the same prompts: chat completions with greedy decoding
(temperature 0) and the top-k log-probabilities of every generated token. Tokens come back
as ids (vLLM's `return_tokens_as_token_ids`), and the prompt's ids too (`return_token_ids`),
so both sides compare ids, never strings.
"""

from __future__ import annotations

from typing import Any

import openai

from serve.verify.compare import Generation

TOKEN_ID_PREFIX = "token_id:"


class ServedError(Exception):
    """The server cannot be reached or refused (message fit for one `error:` line)."""


def client(base_url: str, api_key: str, timeout_s: float = 300) -> openai.OpenAI:
    """An OpenAI SDK client for `base_url` (…/v1), without retries."""
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)


def served_models(api: openai.OpenAI) -> list[str]:
    """The model names GET /v1/models lists. Raises ServedError."""
    try:
        return [m.id for m in api.models.list()]
    except openai.APIConnectionError as exc:
        raise ServedError(f"cannot reach the server at {api.base_url}: {exc}") from None
    except openai.APIStatusError as exc:
        raise ServedError(
            f"the server at {api.base_url} answered {exc.status_code} to GET /models: {exc.message}"
        ) from None


def token_id(token: str) -> int:
    """`token_id:123` -> 123 (what vLLM returns with return_tokens_as_token_ids)."""
    if not token.startswith(TOKEN_ID_PREFIX):
        raise ServedError(f"the server returned token {token!r:.40}, not token_id:N: is it vLLM?")
    return int(token[len(TOKEN_ID_PREFIX) :])


def parse(response: dict[str, Any]) -> Generation:
    """A chat completion (as a dict) -> Generation (pure)."""
    choice = response["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    tokens, steps = [], []
    for entry in content:
        tok = token_id(entry["token"])
        step = {token_id(t["token"]): t["logprob"] for t in entry.get("top_logprobs") or []}
        step[tok] = entry["logprob"]
        tokens.append(tok)
        steps.append(step)
    return Generation(
        token_ids=tokens, logprobs=steps, prompt_token_ids=response.get("prompt_token_ids")
    )


def generate(
    api: openai.OpenAI, model: str, messages: list[dict[str, Any]], *, max_tokens: int, top_k: int
) -> Generation:
    """The server's greedy answer to `messages`. Raises ServedError."""
    try:
        response = api.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=max_tokens,
            logprobs=True,
            top_logprobs=top_k,
            extra_body={"return_tokens_as_token_ids": True, "return_token_ids": True},
        )
    except openai.APIConnectionError as exc:
        raise ServedError(f"cannot reach the server at {api.base_url}: {exc}") from None
    except openai.APIStatusError as exc:
        raise ServedError(
            f"the server at {api.base_url} answered {exc.status_code}: {exc.message}"
        ) from None
    return parse(response.model_dump())

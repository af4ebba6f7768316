"""Compare two greedy generations the way vLLM's own model tests do (pure).

vLLM's `check_logprobs_close` (tests/models/utils.py): walk both token sequences; at the
first position where the tokens differ, each side's token must be in the other side's
top-k log-probabilities (a near-tie that rounding may flip), and the comparison stops
there, since the texts diverge from then on. On top of that rule, `verify` bounds the
log-probability differences at every position up to and including that one, over the
tokens both sides list in their top-k: the rule alone lets a model whose distributions
are off pass as long as the top token survives, or whose first token already differs
(a difference of several nats between the two runner-ups is no rounding near-tie), and
the chosen token's log-probability alone saturates near 0 on a decisive model.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Generation(BaseModel):
    """One greedy answer: its tokens and, per step, log-probabilities by token id."""

    token_ids: list[int] = Field(description="Generated token ids, in order.")
    logprobs: list[dict[int, float]] = Field(
        description="Per generated token: top-k token id -> log-probability, including the "
        "chosen token."
    )
    prompt_token_ids: list[int] | None = Field(
        None, description="The prompt's token ids, when the side reports them."
    )


class Comparison(BaseModel):
    """How one prompt's served answer compares with the reference's."""

    name: str = Field(description="The prompt's name.")
    passed: bool = Field(description="Tokens and log-probabilities agree within the rules.")
    compared: int = Field(
        description="Positions whose log-probabilities were compared (up to and including "
        "the first divergence)."
    )
    first_divergence: int | None = Field(
        None, description="First position where the tokens differ; None if they never do."
    )
    divergence_in_top_k: bool | None = Field(
        None,
        description="At the first divergence: each side's token is in the other's top-k "
        "(a tolerated near-tie). None without a divergence.",
    )
    max_abs_dlogprob: float = Field(
        description="Largest |served - reference| log-probability of a token both sides "
        "list in their top-k, over the compared positions."
    )
    worst_position: int | None = Field(None, description="Where max_abs_dlogprob occurs.")
    tolerance: float = Field(description="Allowed max_abs_dlogprob.")
    prompt_differs_at: int | None = Field(
        None,
        description="First position where the prompts' token ids differ (None: equal or "
        "not reported).",
    )
    served_tokens: int = Field(description="Tokens the server generated.")
    reference_tokens: int = Field(description="Tokens the reference generated.")

    @property
    def reason(self) -> str:
        """Why the prompt failed, in words ('' if it passed)."""
        why = []
        if self.prompt_differs_at is not None:
            why.append(f"prompt tokens differ from position {self.prompt_differs_at}")
        if self.divergence_in_top_k is False:
            why.append(f"token {self.first_divergence} differs outside the other's top-k")
        if self.max_abs_dlogprob > self.tolerance:
            why.append(
                f"|dlogprob| {self.max_abs_dlogprob:.3g} > {self.tolerance:g} at token "
                f"{self.worst_position}"
            )
        if not (self.served_tokens and self.reference_tokens):
            why.append("a side generated nothing")
        return "; ".join(why)

    def line(self) -> str:
        """The one line `verify` prints for this prompt."""
        div = (
            "tokens equal"
            if self.first_divergence is None
            else f"tokens equal until {self.first_divergence} "
            f"({'within' if self.divergence_in_top_k else 'outside'} top-k)"
        )
        head = (
            f"{self.name}: {'match' if self.passed else 'MISMATCH'}: {div}, "
            f"{self.compared} compared (served {self.served_tokens}, reference "
            f"{self.reference_tokens}), max |dlogprob| {self.max_abs_dlogprob:.3g} "
            f"(tolerance {self.tolerance:g})"
        )
        return head if self.passed else f"{head}: {self.reason}"


def first_difference(a: list[int], b: list[int]) -> int | None:
    """First index where two id lists differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(
    name: str, served: Generation, reference: Generation, *, tolerance: float
) -> Comparison:
    """Compare one prompt's served and reference generations (see the module docstring)."""
    compared, divergence, in_top_k = 0, None, None
    worst, worst_at = 0.0, None
    for i, (s_tok, r_tok) in enumerate(zip(served.token_ids, reference.token_ids, strict=False)):
        s_lp, r_lp = served.logprobs[i], reference.logprobs[i]
        compared += 1
        for tok in s_lp.keys() & r_lp.keys():
            d = abs(s_lp[tok] - r_lp[tok])
            if d > worst:
                worst, worst_at = d, i
        if s_tok != r_tok:
            divergence = i
            in_top_k = s_tok in r_lp and r_tok in s_lp
            break
    prompt_diff = None
    if served.prompt_token_ids is not None and reference.prompt_token_ids is not None:
        prompt_diff = first_difference(served.prompt_token_ids, reference.prompt_token_ids)
    passed = (
        bool(served.token_ids and reference.token_ids)
        and in_top_k is not False
        and worst <= tolerance
        and prompt_diff is None
    )
    return Comparison(
        name=name,
        passed=passed,
        compared=compared,
        first_divergence=divergence,
        divergence_in_top_k=in_top_k,
        max_abs_dlogprob=worst,
        worst_position=worst_at,
        tolerance=tolerance,
        prompt_differs_at=prompt_diff,
        served_tokens=len(served.token_ids),
        reference_tokens=len(reference.token_ids),
    )


def summary(results: list[Comparison]) -> str:
    """`fidelity: N/M prompts match`."""
    return f"fidelity: {sum(r.passed for r in results)}/{len(results)} prompts match"

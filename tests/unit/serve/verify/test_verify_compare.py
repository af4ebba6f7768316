"""serve.verify.compare: vLLM's check_logprobs_close rule plus a logprob tolerance (pure)."""

from __future__ import annotations

from serve.verify.compare import Comparison, Generation, compare, first_difference, summary


def gen(tokens: list[int], steps: list[dict[int, float]], prompt: list[int] | None = None):
    return Generation(token_ids=tokens, logprobs=steps, prompt_token_ids=prompt)


STEPS = [{1: -0.1, 2: -2.5, 3: -4.0}, {2: -0.2, 1: -1.9, 3: -5.0}, {3: -0.05, 1: -3.1}]


def test_equal_generations_match_with_zero_difference() -> None:
    r = compare("p", gen([1, 2, 3], STEPS, [9, 8]), gen([1, 2, 3], STEPS, [9, 8]), tolerance=0.01)
    assert r.passed and r.first_divergence is None and r.compared == 3, r
    assert r.max_abs_dlogprob == 0.0 and r.line().startswith("p: match: tokens equal"), r.line()


def test_divergence_within_top_k_passes_and_stops_the_comparison() -> None:
    # Position 1 flips between tokens 2 and 1; each is in the other's top-k. What follows
    # (wildly different) is not compared.
    served = gen([1, 2, 7], [STEPS[0], {2: -0.69, 1: -0.70}, {7: -0.1}])
    ref = gen([1, 1, 3], [STEPS[0], {1: -0.69, 2: -0.70}, {3: -9.0}])
    r = compare("p", served, ref, tolerance=0.05)
    assert r.passed and r.first_divergence == 1 and r.divergence_in_top_k is True, r
    assert r.compared == 2 and "within top-k" in r.line(), r.line()


def test_divergence_outside_top_k_fails() -> None:
    served = gen([1, 2], [STEPS[0], {2: -0.1, 3: -3.0}])
    ref = gen([1, 4], [STEPS[0], {4: -0.1, 1: -3.0}])
    r = compare("p", served, ref, tolerance=1.0)
    assert not r.passed and r.first_divergence == 1 and r.divergence_in_top_k is False, r
    assert "MISMATCH" in r.line() and "outside the other's top-k" in r.line(), r.line()


def test_logprob_difference_beyond_tolerance_fails_even_with_equal_tokens() -> None:
    # Same greedy tokens; the runner-up of step 1 moved by 0.3 nats.
    shifted = [STEPS[0], {2: -0.2, 1: -2.2, 3: -5.0}, STEPS[2]]
    r = compare("p", gen([1, 2, 3], STEPS), gen([1, 2, 3], shifted), tolerance=0.1)
    assert not r.passed and r.first_divergence is None, r
    assert abs(r.max_abs_dlogprob - 0.3) < 1e-9 and r.worst_position == 1, r
    assert "> 0.1 at token 1" in r.line(), r.line()
    assert compare("p", gen([1, 2, 3], STEPS), gen([1, 2, 3], shifted), tolerance=0.5).passed


def test_a_divergence_far_from_a_tie_fails_even_within_top_k() -> None:
    # The first token flips, each in the other's top-k (vLLM's rule alone would pass), but
    # the two runner-ups are 3 nats apart on the two sides: no rounding near-tie.
    served = gen([1], [{1: -0.05, 2: -3.0}])
    ref = gen([2], [{2: -0.05, 1: -3.0}])
    r = compare("p", served, ref, tolerance=0.5)
    assert not r.passed and r.first_divergence == 0 and r.divergence_in_top_k, r
    assert r.worst_position == 0 and abs(r.max_abs_dlogprob - 2.95) < 1e-9, r


def test_tokens_only_one_side_lists_are_not_compared() -> None:
    a = gen([1], [{1: -0.1, 5: -2.0}])
    b = gen([1], [{1: -0.1, 6: -2.5}])
    assert compare("p", a, b, tolerance=0.0).passed


def test_different_prompt_tokens_fail_and_say_where() -> None:
    r = compare("p", gen([1], STEPS[:1], [2, 4, 5]), gen([1], STEPS[:1], [2, 4, 6]), tolerance=1)
    assert not r.passed and r.prompt_differs_at == 2, r
    assert "prompt tokens differ from position 2" in r.line(), r.line()


def test_an_empty_side_fails() -> None:
    r = compare("p", gen([], []), gen([1], STEPS[:1]), tolerance=1)
    assert not r.passed and "generated nothing" in r.line(), r.line()


def test_first_difference_counts_a_length_difference() -> None:
    assert first_difference([1, 2], [1, 2]) is None
    assert first_difference([1, 2], [1, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_summary_counts_matches() -> None:
    ok = compare("a", gen([1], STEPS[:1]), gen([1], STEPS[:1]), tolerance=0)
    bad = Comparison(**{**ok.model_dump(), "name": "b", "passed": False})
    assert summary([ok, bad, ok]) == "fidelity: 2/3 prompts match"

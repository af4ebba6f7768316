"""serve.auth.limits: token-bucket arithmetic and the per-service table, on a fake clock
(the times are arguments: nothing here sleeps)."""

from __future__ import annotations

from serve.auth.limits import Bucket, Limiter, charge, in_credit, refilled, retry_after, take


def test_a_bucket_bursts_a_minute_then_refills_steadily() -> None:
    bucket = None
    for _ in range(3):
        bucket, wait = take(bucket, 0.0, 3)
        assert wait == 0
    bucket, wait = take(bucket, 0.0, 3)
    assert wait == 20.0  # 3 per minute: one every 20 s
    bucket, wait = take(bucket, 20.0, 3)
    assert wait == 0 and abs(bucket.level) < 1e-9
    assert refilled(Bucket(0, 0), 1000.0, 3) == 3  # never above a minute's worth


def test_tokens_are_charged_after_the_fact_and_refuse_while_in_debt() -> None:
    bucket = charge(None, 0.0, 600, 900)  # a 900-token answer on a 600/min budget
    assert bucket.level == -300
    assert in_credit(bucket, 0.0, 600) > 29.9  # 300 tokens at 10/s
    assert in_credit(bucket, 31.0, 600) == 0
    assert retry_after(0.2) == 1 and retry_after(29.99) == 30


def test_one_service_over_its_limit_leaves_the_others_alone() -> None:
    limiter = Limiter()
    waits = [limiter.admit("batch", 0.0, 2, None) for _ in range(5)]
    assert waits[:2] == [0, 0] and all(w > 0 for w in waits[2:]), waits
    assert [limiter.admit("ris", 0.0, None, None) for _ in range(100)] == [0] * 100
    assert limiter.admit("other", 0.0, 2, None) == 0
    limiter.spent("tokens", 0.0, 5000, 1000)
    assert limiter.admit("tokens", 1.0, None, 1000) > 0
    assert limiter.admit("tokens", 300.0, None, 1000) == 0

"""The worker's retry delays have jitter (issue 17): workers that lost PostgreSQL together do
not retry in lockstep."""

from __future__ import annotations

import random

from services.worker.consumer import MAX_BACKOFF, backoff_delay


def test_retry_delays_are_spread_within_the_upper_half_of_the_exponential_step() -> None:
    rng = random.Random(17)
    for attempt in range(1, 15):
        ceiling = min(MAX_BACKOFF, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt, rng.uniform) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len({round(delay, 6) for delay in delays}) > 150  # not in lockstep
    assert max(backoff_delay(50) for _ in range(100)) <= MAX_BACKOFF

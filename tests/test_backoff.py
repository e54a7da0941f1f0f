"""The one backoff formula every reconnect loop uses."""

from __future__ import annotations

import random

import pytest

from mqttlink import Backoff


def test_delays_double_within_jitter_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5


def test_seeded_backoffs_repeat_and_differ_between_seeds() -> None:
    def run(seed: int) -> list[float]:
        backoff = Backoff(rng=random.Random(seed))
        return [backoff.next_delay() for _ in range(8)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0)
    with pytest.raises(ValueError, match="cap_s"):
        Backoff(base_s=2, cap_s=1)

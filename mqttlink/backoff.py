"""Jittered exponential backoff: the one formula every reconnect loop uses."""

from __future__ import annotations

import random


class Backoff:
    """Delays of uniform(ceiling / 2, ceiling), ceiling = min(cap, base * 2**attempt).

    Half the ceiling at least, so a reconnect storm spreads out without ever retrying at
    once; ``reset()`` after a success starts again from ``base_s``.
    """

    def __init__(
        self, *, base_s: float = 0.2, cap_s: float = 10.0, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got {base_s} and {cap_s}")
        self._base_s = base_s
        self._cap_s = cap_s
        self._attempt = 0
        self._uniform = (rng or random.Random()).uniform

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap_s, self._base_s * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return self._uniform(ceiling / 2, ceiling)

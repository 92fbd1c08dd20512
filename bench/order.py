"""The order in which a benchmark runs its arms: alternating, so a load that drifts during the run falls
on every arm alike instead of on whichever ran last."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def alternating(arms: Sequence[T], pairs: int) -> Iterator[tuple[int, T]]:
    """(round, arm) for `pairs` rounds of every arm, each round in the opposite order: A B, B A, A B, ..."""
    for number in range(pairs):
        for arm in arms if number % 2 == 0 else reversed(arms):
            yield number, arm

"""Prompt samplers: which training prompts a method sees, and how often."""
from __future__ import annotations


def difficulty_upsample(correct_counts: dict[int, int], n_samples: int, factor: int) -> list[int]:
    """Uni-OPD's offline difficulty balance: a prompt solved by the initial student in
    1..n-1 of n samples (mid difficulty) appears ``factor`` times in the pool, the others
    once; none is dropped. Returns the pool of prompt indices (an epoch of sampling)."""
    pool: list[int] = []
    for idx in sorted(correct_counts):
        mid = 0 < correct_counts[idx] < n_samples
        pool += [idx] * (factor if mid else 1)
    return pool

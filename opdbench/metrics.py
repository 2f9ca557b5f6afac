"""Avg@k, unbiased Pass@k and Maj@k from n scored samples of one problem.

Each is the expectation over a uniformly random k-subset of the n samples:
- Avg@k: mean correctness of the k samples (= c / n);
- Pass@k: at least one of the k is correct, ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021),
  computed as a stable product;
- Maj@k: the most frequent answer among the k is correct. Samples with no parsable
  answer do not vote; a tie between the largest answer groups is broken uniformly at
  random; no vote at all is wrong. Computed exactly by dynamic programming over the
  answer groups (no subset enumeration).
"""
from __future__ import annotations

from math import comb
from typing import Callable, Sequence

import numpy as np


def avg_at_k(n: int, c: int, k: int) -> float:
    _check(n, c, k)
    return c / n


def pass_at_k(n: int, c: int, k: int) -> float:
    _check(n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def group_answers(answers: Sequence[str | None], same: Callable[[str, str], bool]) -> list[list[int]]:
    """Indices of the samples grouped by answer equivalence (None answers left out)."""
    groups: list[list[int]] = []
    reps: list[str] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g, rep in zip(groups, reps):
            if same(rep, a):
                g.append(i)
                break
        else:
            groups.append([i])
            reps.append(a)
    return groups


def maj_at_k(correct_group: int, other_groups: Sequence[int], unparsed: int, k: int) -> float:
    """Expected majority-vote correctness over random k-subsets.

    ``correct_group``: size of the group of samples whose answer is correct (0 if none);
    ``other_groups``: sizes of the groups of wrong answers; ``unparsed``: samples with no
    answer (they take places in the subset but do not vote).
    """
    n = correct_group + sum(other_groups) + unparsed
    _check(n, correct_group, k)
    total = comb(n, k)
    expected = 0.0
    for x in range(1, min(correct_group, k) + 1):  # x correct samples drawn
        ways_x = comb(correct_group, x)
        # ways[j][t]: ways to draw j samples from the wrong groups with every group < x
        # except t groups drawn exactly x times (ties with the correct group).
        ways = np.zeros((k - x + 1, len(other_groups) + 1), dtype=object)
        ways[0][0] = 1
        for size in other_groups:
            nxt = np.zeros_like(ways)
            for j in range(k - x + 1):
                for t in range(len(other_groups) + 1):
                    if ways[j][t] == 0:
                        continue
                    for d in range(0, min(size, x, k - x - j) + 1):
                        nxt[j + d][t + (d == x)] += ways[j][t] * comb(size, d)
            ways = nxt
        for j in range(k - x + 1):
            rest = comb(unparsed, k - x - j)
            if rest == 0:
                continue
            for t in range(len(other_groups) + 1):
                if ways[j][t]:
                    expected += ways_x * ways[j][t] * rest / (t + 1)
    return float(expected / total)


def problem_metrics(correct: Sequence[bool], answers: Sequence[str | None], k: int,
                    same: Callable[[str, str], bool]) -> dict[str, float]:
    """Avg@k, Pass@k and Maj@k of one problem from its n >= k samples."""
    n, c = len(correct), int(sum(correct))
    groups = group_answers(answers, same)
    right = [g for g in groups if correct[g[0]]]
    # Verifier equivalence puts every correct answer in one group; merge defensively.
    correct_size = sum(len(g) for g in right)
    others = [len(g) for g in groups if not correct[g[0]]]
    # Correct samples whose answer could not be extracted still count for Avg/Pass.
    unparsed = n - correct_size - sum(others)
    return {f"avg@{k}": avg_at_k(n, c, k), f"pass@{k}": pass_at_k(n, c, k),
            f"maj@{k}": maj_at_k(correct_size, others, unparsed, k)}


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")

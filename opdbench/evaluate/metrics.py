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
from typing import Any, Callable, Sequence

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


def vote_groups(correct: Sequence[bool], answers: Sequence[str | None],
                same: Callable[[str, str], bool]) -> tuple[int, list[int], int]:
    """``maj_at_k``'s arguments for one problem: the size of the correct answer's group,
    the sizes of the wrong answers' groups, and the samples with no answer."""
    groups = group_answers(answers, same)
    # Verifier equivalence puts every correct answer in one group; merge defensively.
    correct_size = sum(len(g) for g in groups if correct[g[0]])
    others = [len(g) for g in groups if not correct[g[0]]]
    # Correct samples whose answer could not be extracted still count for Avg/Pass.
    return correct_size, others, len(correct) - correct_size - sum(others)


def problem_metrics(correct: Sequence[bool], answers: Sequence[str | None], ks: int | Sequence[int],
                    same: Callable[[str, str], bool]) -> dict[str, float]:
    """Avg@k, Pass@k and Maj@k of one problem from its n samples, for each k <= n of ``ks``
    (the answers are grouped once)."""
    n, c = len(correct), int(sum(correct))
    votes = vote_groups(correct, answers, same)
    out = {}
    for k in [ks] if isinstance(ks, int) else ks:
        out |= {f"avg@{k}": avg_at_k(n, c, k), f"pass@{k}": pass_at_k(n, c, k), f"maj@{k}": maj_at_k(*votes, k)}
    return out


def expected_max_at_k(values: Sequence[float], k: int) -> float:
    """The expected largest of a uniformly random k-subset of ``values``: the i-th smallest
    is the largest of C(i-1, k-1) of the C(n, k) subsets. With response lengths, the
    decoding steps K parallel samples take (a batch runs until its longest one ends)."""
    n = len(values)
    _check(n, 0, k)
    ordered = sorted(values)
    return float(sum(v * comb(i, k - 1) for i, v in enumerate(ordered)) / comb(n, k))


def scaling_ks(n: int) -> list[int]:
    """The sample budgets of a test-time scaling curve: 1, 2, 4, ... up to n, and n."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]


def samples_of(decoding: dict[str, Any], benchmark: str) -> int:
    """A benchmark's samples per problem under an evaluation's decoding settings: its own N
    (``samples_per_benchmark``, set only where the benchmarks' N differ), else ``n_samples``."""
    return decoding.get("samples_per_benchmark", {}).get(benchmark, decoding["n_samples"])


def evaluated_samples(metrics: dict[str, Any], benchmark: str) -> int:
    """The N a metrics file's benchmark was evaluated with: its ``samples_per_problem``, else
    (an older file) what its decoding settings say."""
    return metrics["benchmarks"][benchmark].get("samples_per_problem") or samples_of(metrics["decoding"], benchmark)


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")

"""Avg@k, Pass@k and Maj@k against brute-force enumeration of every k-subset."""
import itertools
import json
import random
from collections import Counter
from math import comb

import pytest

from opdbench.evaluate.metrics import (avg_at_k, expected_max_at_k, group_answers, maj_at_k, pass_at_k, problem_metrics,
                              scaling_ks)


def brute(labels, k):
    """labels: 'C' correct answer, other hashables wrong answers, None unparsed."""
    subsets = list(itertools.combinations(range(len(labels)), k))
    avg = pas = maj = 0.0
    for sub in subsets:
        picked = [labels[i] for i in sub]
        avg += picked.count("C") / k
        pas += "C" in picked
        votes = Counter(p for p in picked if p is not None)
        if votes:
            top = max(votes.values())
            tied = [a for a, v in votes.items() if v == top]
            maj += ("C" in tied) / len(tied)
    return avg / len(subsets), pas / len(subsets), maj / len(subsets)


def test_against_enumeration_on_random_cases():
    rng = random.Random(0)
    for _ in range(400):
        n = rng.randint(1, 9)
        labels = [rng.choice(["C", "C", "a", "b", "c", None]) for _ in range(n)]
        k = rng.randint(1, n)
        c = labels.count("C")
        others = [labels.count(g) for g in "abc" if labels.count(g)]
        avg, pas, maj = brute(labels, k)
        assert avg_at_k(n, c, k) == pytest.approx(avg, abs=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(pas, abs=1e-12)
        assert maj_at_k(c, others, labels.count(None), k) == pytest.approx(maj, abs=1e-12)


def test_hand_values():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert maj_at_k(2, [1], 0, 3) == 1.0  # 2 correct vs 1 wrong: majority always right
    assert maj_at_k(1, [1], 0, 2) == 0.5  # a tie is a coin flip
    assert maj_at_k(0, [3], 1, 2) == 0.0
    assert maj_at_k(1, [], 3, 4) == 1.0  # unparsed answers do not vote


def test_pass_at_k_is_stable_for_large_n():
    n, c = 2000, 3
    exact = 1 - comb(n - c, 1000) / comb(n, 1000)
    assert pass_at_k(n, c, 1000) == pytest.approx(exact, rel=1e-9)
    assert 0 < pass_at_k(10_000, 1, 1) < 1e-3


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        avg_at_k(3, 1, 4)


def test_grouping_uses_the_equivalence_and_problem_metrics():
    same = lambda a, b: float(a) == float(b)  # noqa: E731
    answers = ["2", "2.0", None, "3"]
    assert group_answers(answers, same) == [[0, 1], [3]]
    m = problem_metrics([True, True, False, False], answers, 4, same)
    assert m == {"avg@4": 0.5, "pass@4": 1.0, "maj@4": 1.0}


def test_expected_largest_of_k_against_enumeration():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 8)
        values = [rng.randint(0, 20) for _ in range(n)]
        k = rng.randint(1, n)
        subsets = list(itertools.combinations(values, k))
        assert expected_max_at_k(values, k) == pytest.approx(sum(map(max, subsets)) / len(subsets), abs=1e-12)
    assert expected_max_at_k([3, 9, 5], 1) == pytest.approx(17 / 3) and expected_max_at_k([3, 9, 5], 3) == 9
    with pytest.raises(ValueError):
        expected_max_at_k([1, 2], 3)


def test_scaling_budgets_double_up_to_n():
    assert scaling_ks(8) == [1, 2, 4, 8] and scaling_ks(1) == [1]
    assert scaling_ks(6) == [1, 2, 4, 6] and scaling_ks(32) == [1, 2, 4, 8, 16, 32]


def test_an_evaluation_summary_carries_each_benchmarks_scaling_curve():
    from opdbench.evaluate.evaluation import summarize

    class ExactAnswers:
        same_answer = staticmethod(lambda a, b: a == b)
        for_problem = classmethod(lambda cls, problem: cls)

    # Problem p1: answers 7 (right), 5, 5, None; problem p2: all four right. Tokens 10, 20, 30, 40 and 8 each.
    rows = [{"benchmark": "b", "id": "p1", "sample": i, "correct": a == "7", "answer": a, "tokens": t,
             "truncated": False} for i, (a, t) in enumerate([("7", 10), ("5", 20), ("5", 30), (None, 40)])]
    rows += [{"benchmark": "b", "id": "p2", "sample": i, "correct": True, "answer": "1", "tokens": 8,
              "truncated": i == 0} for i in range(4)]
    benchmarks, curves = summarize(rows, ExactAnswers, 4)
    assert benchmarks == {"b": {"avg@4": pytest.approx((0.25 + 1) / 2), "pass@1": pytest.approx((0.25 + 1) / 2),
                                "pass@4": 1.0, "maj@4": pytest.approx((0.0 + 1) / 2), "mean_tokens": 16.5,
                                "truncated": 0.125, "problems": 2, "samples_per_problem": 4}}
    curve = curves["b"]
    assert curve["k"] == [1, 2, 4]
    # p1, K=2: pass 1 - C(3,2)/C(4,2) = 1/2; maj: of 6 pairs, {7,5} x2 ties (1/2 each), {7,None} wins: 2/6.
    assert curve["pass"] == pytest.approx([(0.25 + 1) / 2, (0.5 + 1) / 2, 1.0])
    assert curve["maj"] == pytest.approx([(0.25 + 1) / 2, (2 / 6 + 1) / 2, 0.5])
    # p1's expected longest of K: 25, (20 + 2 * 30 + 3 * 40) / 6, 40; p2's is always 8.
    assert curve["decode_steps"] == pytest.approx([(25 + 8) / 2, (200 / 6 + 8) / 2, (40 + 8) / 2])


def test_sampling_se_matches_the_hand_computed_noise_of_avg_at_n(tmp_path):
    from opdbench.models.robustness import sampling_se

    # Two evaluations (files) of 2 problems: problem a correct in 3 of 4 samples, b in 0 of 4.
    rows = [[("a", True), ("a", False), ("b", False), ("b", False)],
            [("a", True), ("a", True), ("b", False), ("b", False)]]
    files = []
    for i, evaluation in enumerate(rows):
        path = tmp_path / f"samples{i}.jsonl"
        path.write_text("".join(json.dumps({"benchmark": "x", "id": pid, "sample": k, "correct": c}) + "\n"
                                for k, (pid, c) in enumerate(evaluation)))
        files.append(path)
    # a: p = 3/4 over m = 4 -> variance of its mean p(1-p)/(m-1) = 1/16; b: 0. Avg over P = 2.
    assert sampling_se(files)["x"] == pytest.approx(100 * (1 / 16) ** 0.5 / 2)
    # One file alone: a has p = 1/2 over m = 2 -> 1/4; SE = 100 * sqrt(1/4) / 2.
    assert sampling_se(files[:1])["x"] == pytest.approx(25.0)

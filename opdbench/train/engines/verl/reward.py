"""verl's reward function for the suite's tasks (``reward.custom_reward_function``): verl's reward
loop runs even when the loss takes no task reward, and its default scorer knows only its own
data sources. The score is the task's verifier (1.0 correct, 0.0 not): verl logs its mean as
``critic/score/mean``, the suite's ``train_accuracy``."""
from __future__ import annotations

import functools
from typing import Any

from opdbench.train.engines.verl.data import problem_of


@functools.lru_cache(maxsize=None)
def _task(name: str):
    from opdbench.tasks.base import get_task

    return get_task(name)


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None,
                  **kwargs: Any) -> float:
    return float(_task(data_source).score(solution_str, problem_of(ground_truth)).correct)

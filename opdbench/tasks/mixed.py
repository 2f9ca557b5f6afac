"""A task made of tasks: multi-domain distillation (TrOPD Sec. 5.1: OpenThoughts3's math, code and
science prompts in one training set; ExOPD's and Uni-OPD's math-and-code settings).

Config: ``task_settings.<name>`` with ``task: mixed``; its ``data.train`` is a list of sources and
every source, in ``train`` and ``benchmarks``, names the task that formats and scores its rows
(``{from: openthoughts3/code, task: code}``, ``aime24: {from: luffy/aime24, task: math}``). Each row
keeps that name as ``domain``: prompts, verifiers, SFT writers and Maj@k's answer grouping are the
domain task's, the task's other settings (``sandbox``) reach every domain, and verl's data gets the
domain as ``data_source`` (the key its multi-teacher routing reads).
"""
from __future__ import annotations

import random
from typing import Any

from opdbench.data.catalog import split_list
from opdbench.tasks.base import STOP_EARLY_WRITER, Score, Task, get_task, register_task

DATA_KEYS = ("seed", "train", "benchmarks")


@register_task("mixed")
class MixedTask(Task):
    writer_schema = STOP_EARLY_WRITER

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        shared = {k: v for k, v in cfg.items() if k not in DATA_KEYS}  # e.g. the code sandbox's limits
        specs = [*split_list(cfg.get("train", [])), *cfg.get("benchmarks", {}).values()]
        self.domains: dict[str, Task] = {name: get_task(name, shared) for name in dict.fromkeys(s["task"] for s in specs)}

    def for_problem(self, problem: dict[str, Any]) -> Task:
        return self.domains[problem["domain"]]

    def load_split(self, spec, rng: random.Random, exclude: set[str]) -> list[dict[str, Any]]:
        rows = []
        for source in split_list(spec):
            found = self.domains[source["task"]].load_split(source, rng, exclude)
            exclude = exclude | {r["problem"] for r in found}  # generated problems stay distinct across domains
            rows += [{**r, "domain": source["task"]} for r in found]
        return rows

    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        return self.for_problem(problem).messages(problem)

    def score(self, response: str, problem: dict[str, Any]) -> Score:
        return self.for_problem(problem).score(response, problem)

    def score_many(self, responses: list[str], problems: list[dict[str, Any]]) -> list[Score]:
        """Each domain's rows in one call to its task (the code checker runs its batch in parallel)."""
        scores: list[Score | None] = [None] * len(problems)
        for name, task in self.domains.items():
            idx = [i for i, p in enumerate(problems) if p["domain"] == name]
            if idx:
                for i, s in zip(idx, task.score_many([responses[i] for i in idx], [problems[i] for i in idx])):
                    scores[i] = s
        return scores  # type: ignore[return-value]

    def scoring_report(self) -> dict[str, Any] | None:
        reports = {name: r for name, task in self.domains.items() if (r := task.scoring_report()) is not None}
        return reports or None

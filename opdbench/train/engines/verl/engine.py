"""``VerlEngine``: a run trained by verl 0.9.1's PPO trainer with its on-policy distillation, in
the engine interface of issue 14 (constructor, ``train() -> rows``, ``save_model``).

``train`` writes the run's inputs (the parquet, the run file, the launch script), runs the script
(verl starts Ray, its vLLM rollout and teacher servers, FSDP workers), and reads verl's metrics
back in the suite's keys. ``save_model`` converts verl's last checkpoint to HF format with verl's
model merger. A rerun after a kill resumes from verl's last checkpoint (``trainer.resume_mode=auto``).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from opdbench.atomic import atomic_dir, atomic_write_text
from opdbench.train.engines import check_capabilities, register_engine
from opdbench.train.engines.verl import data, launch
from opdbench.train.engines.verl.overrides import VerlResources, teacher_replicas, verl_overrides
from opdbench.errors import ConfigError


def teacher_weights(teacher_ref: str) -> str | dict[str, str]:
    """The teacher's weights; for a multi-teacher model (a mixed task's teacher per domain,
    ``models.teacher_refs``) domain -> weights, one verl teacher each (``overrides._teachers``)."""
    from opdbench.models import resolve_weights, teacher_refs

    refs = teacher_refs(teacher_ref)
    return resolve_weights(teacher_ref) if refs is None else {domain: resolve_weights(ref) for domain, ref in refs.items()}


@register_engine("verl")
class VerlEngine:
    # From opdbench.method.SCORING_NEEDS, what verl 0.9.1 gives a loss beyond the teacher's log-prob
    # of each sampled token: the reference model's (its reference worker, started by
    # overrides._reference; the initial student at temperature 1). Its teacher loop returns either
    # sampled-token or top-k log-probs in a run, not both (teacher_topk methods need both); no
    # teacher entropy or teacher-written prefixes; its reward reaches the loss only as advantages
    # (outcome); no pre-training difficulty profile (prompt_difficulty). docs/verl.md, "Methods".
    capabilities: frozenset[str] = frozenset({"ref_logprobs"})

    def __init__(self, run: dict[str, Any], task, train_rows: list[dict[str, Any]], student_ref: str,
                 teacher_ref: str, method, out_dir: Path, device: str = "cuda"):
        check_capabilities([(run["run_name"], type(method), self.name)])  # the registry's message
        if device == "cpu":
            raise ConfigError("config key 'base.device': the verl engine runs on GPUs (vLLM rollout and teacher); "
                              "set base.device: cuda, or base.engine: local for CPU")
        from opdbench.models import load_tokenizer, resolve_weights
        from opdbench.train.rollout import encode_prompts

        self.run, self.task, self.rows, self.method = run, task, train_rows, method
        self.out_dir = Path(out_dir)
        self.student, self.teacher = resolve_weights(student_ref), teacher_weights(teacher_ref)
        if isinstance(self.teacher, dict):  # verl would stop at the first prompt without a teacher
            missing = sorted({data.data_source(task, row) for row in train_rows} - set(self.teacher))
            if missing:
                raise ConfigError(f"the train prompts of {', '.join(map(repr, missing))} have no teacher: the "
                                  f"teacher model {teacher_ref} lists teachers for "
                                  f"{', '.join(self.teacher) or 'no domain'} (verl routes each prompt to the "
                                  f"teacher of its data_source)")
        self.tokenizer = load_tokenizer(student_ref)
        self.resources = VerlResources.from_settings(run["train"].get("verl"))
        if isinstance(self.teacher, dict):
            teacher_replicas(self.resources, list(self.teacher))  # the pool splits evenly, or a ConfigError now
        # verl refuses a prompt longer than data.max_prompt_length: the longest one sets it.
        self.max_prompt_length = max(len(ids) for ids in encode_prompts(self.tokenizer, task, train_rows))
        self.python = sys.executable

    def prepare(self) -> Path:
        """Write the run's inputs and its launch script; return the script."""
        train_file = data.write_parquet(self.task, self.rows, self.out_dir / "train.parquet")
        launch.write_run_file(self.run, self.out_dir)
        overrides = verl_overrides(self.run, student=self.student, teacher=self.teacher, train_file=train_file,
                                   n_prompts=len(self.rows), max_prompt_length=self.max_prompt_length,
                                   out_dir=self.out_dir, resources=self.resources, needs=type(self.method).needs)
        env = launch.launch_env(self.out_dir, launch.next_attempt(self.out_dir))
        multi_node = self.resources.nnodes > 1
        prologue = launch.ray_on_slurm(self.resources.nnodes, self.resources.gpus_per_node,
                                       self.python) if multi_node else []
        return launch.write_launch_script(self.out_dir / "launch.sh", launch.launch_command(self.python, overrides, env),
                                          env, prologue)

    def train(self) -> list[dict[str, Any]]:
        script = self.prepare()
        # verl's output goes to the job's own log (the rule's log file), with the suite's.
        proc = subprocess.run(["bash", str(script)])
        if proc.returncode:
            raise RuntimeError(f"verl's trainer exited with {proc.returncode} ({script}); its output is in this job's log")
        rows = launch.read_metrics(self.out_dir, self.run["train"]["steps"])
        atomic_write_text(self.out_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        return rows

    def save_model(self, model_dir: Path) -> None:
        """verl's last checkpoint merged to HF format, with the student's tokenizer; the caller
        writes model.json after it."""
        actor = launch.latest_checkpoint(self.out_dir)
        with atomic_dir(model_dir) as tmp:
            subprocess.run(launch.merge_command(self.python, actor, tmp), check=True)
            self.tokenizer.save_pretrained(tmp)

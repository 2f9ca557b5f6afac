"""``VerlEngine``: a run trained by verl 0.9.1's PPO trainer with its on-policy distillation, in
the engine interface of issue 14 (constructor, ``train() -> rows``, ``save_model``).

``train`` writes the run's inputs (the parquet, the run file, the launch script), runs the script
(verl starts Ray, its vLLM rollout and teacher servers, FSDP workers), and reads verl's metrics
back in the suite's keys. ``save_model`` converts verl's last checkpoint to HF format with verl's
model merger. A rerun after a kill resumes from verl's last checkpoint (``trainer.resume_mode=auto``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opdbench.atomic import atomic_dir, atomic_write_text
from opdbench.train.engines import check_capabilities, register_engine
from opdbench.train.engines.verl import data, launch, profile
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
    # overrides._reference; the initial student at temperature 1); the verifier's outcome (verl's
    # reward, the task's verifier: reward.py, read by the registered trainer); the initial student's
    # difficulty profile (profile.py, before verl starts; the pool becomes the training parquet). No
    # full-vocabulary teacher entropy (vLLM returns top-k log-probs).
    # docs/verl.md, "Methods".
    # The teacher's top-k log-probs with its sampled-token ones (agent_loop.py) and the student's top-k
    # forward KL computed in verl's forward (StudentOutput.topk_fkl; not the student's top-k log-probs).
    # Teacher-written prefixes through the prefix agent loop (agent_loop.py, with the top-k workers).
    capabilities: frozenset[str] = frozenset({"ref_logprobs", "outcome", "prompt_difficulty", "teacher_topk",
                                              "teacher_prefix"})

    def __init__(self, run: dict[str, Any], task, train_rows: list[dict[str, Any]], student_ref: str,
                 teacher_ref: str, method, out_dir: Path, device: str = "cuda"):
        check_capabilities([(run["run_name"], type(method), self.name, run["hparams"])])  # the registry's message
        if device == "cpu":
            raise ConfigError("config key 'base.device': the verl engine runs on GPUs (vLLM rollout and teacher); "
                              "set base.device: cuda, or base.engine: local for CPU")
        from opdbench.models import load_tokenizer, resolve_weights
        from opdbench.train.rollout import encode_prompts

        self.run, self.task, self.rows, self.method = run, task, train_rows, method
        self.out_dir = Path(out_dir)
        self.student_ref = student_ref
        self.student, self.teacher = resolve_weights(student_ref), teacher_weights(teacher_ref)
        self.tokenizer = load_tokenizer(student_ref)
        self.resources = VerlResources.from_settings(run["train"].get("verl"))
        if isinstance(self.teacher, dict):  # verl would stop at the first prompt without a teacher
            missing = sorted({data.data_source(task, row) for row in train_rows} - set(self.teacher))
            if missing:
                raise ConfigError(f"the train prompts of {', '.join(map(repr, missing))} have no teacher: the "
                                  f"teacher model {teacher_ref} lists teachers for "
                                  f"{', '.join(self.teacher) or 'no domain'} (verl routes each prompt to the "
                                  f"teacher of its data_source)")
            teacher_replicas(self.resources, list(self.teacher))  # the pool splits evenly, or a ConfigError now
        # verl refuses a prompt longer than data.max_prompt_length: the longest one sets it.
        self.max_prompt_length = max(len(ids) for ids in encode_prompts(self.tokenizer, task, train_rows))
        self.python = sys.executable

    def prompt_pool(self) -> list[int]:
        """The train rows' indices verl draws from: all of them, or (need ``prompt_difficulty``) the
        method's pool from the initial student's difficulty profile, made once per run by profile.py
        in a process of its own and kept beside the checkpoints (a resumed run reuses it)."""
        from opdbench.train import common

        if "prompt_difficulty" not in self.method.needs:
            return list(range(len(self.rows)))
        backend = profile.backend()

        def build() -> dict[str, int]:
            rows_file, counts_file = self.out_dir / "profile_rows.jsonl", self.out_dir / "profile_counts.json"
            atomic_write_text(rows_file, "".join(json.dumps(r) + "\n" for r in self.rows))
            job = {"student": self.student_ref, "task": self.task.name, "task_cfg": self.task.cfg,
                   "rows": str(rows_file), "method": self.run["method"], "hparams": self.run["hparams"],
                   "train": self.run["train"], "seed": self.run["seed"], "backend": backend, "out": str(counts_file)}
            job_file = self.out_dir / "profile_job.json"
            atomic_write_text(job_file, json.dumps(job, default=str))
            subprocess.run([self.python, "-m", "opdbench.train.engines.verl.profile", str(job_file)], check=True,
                           env={**os.environ, launch.METHODS_ENV: str(launch.methods_dir())})
            return json.loads(counts_file.read_text())

        counts = common.fixed_state(self.out_dir / "difficulty.json", self.run["config_hash"], build, backend=backend)
        return common.prompt_pool(self.method, len(self.rows), counts)

    def prepare(self) -> Path:
        """Write the run's inputs and its launch script; return the script."""
        pool = self.prompt_pool()
        train_file = data.write_parquet(self.task, [self.rows[i] for i in pool], self.out_dir / "train.parquet",
                                        indices=pool)
        launch.write_run_file(self.run, self.out_dir)
        overrides = verl_overrides(self.run, student=self.student, teacher=self.teacher, train_file=train_file,
                                   n_prompts=len(pool), max_prompt_length=self.max_prompt_length,
                                   out_dir=self.out_dir, resources=self.resources, needs=self.method.needs)
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

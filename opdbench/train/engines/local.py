"""The local engine: one process, transformers + torch, CPU or one GPU.

One training step: sample prompts (from the method's pool) -> rollouts (the student's,
after a teacher prefix where the method asks for one; KV-cached ``generate``) ->
scoring: behaviour log-probs, entropy and ||p||^2 of the student, teacher log-probs of
the sampled tokens, and only what the method declares it needs (teacher top-k and
entropy, reference log-probs, verifier outcome) -> the method's loss terms on each
mini-batch, aggregated over it (``opdbench.train.losses``) -> AdamW step. All scoring is
chunked over positions (``opdbench.train.scoring``): O(n*k) memory, never the T x V logits of
two models at once. Seeding, prompt sampling, the run's log and the per-step metrics are
the engine-neutral ones of ``opdbench.train.common``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from opdbench.lazy import no_grad, torch
from tqdm import tqdm

from opdbench.atomic import atomic_path
from opdbench.train import common
from opdbench.train.engines import register_engine
from opdbench.train.common import (CHECKPOINT, STREAM_MINIBATCH, STREAM_TORCH, RunLog, prompt_indices, step_seed,
                                     stream_generator, to_batch_shape)
from opdbench.train.losses import batch_loss
from opdbench.method import SCORING_NEEDS, Method, Progress, ScoredBatch, StudentOutput
from opdbench.models import load_model, load_tokenizer, teachers_by_domain
from opdbench.train.rollout import Sequences, encode_prompts, pack, sample
from opdbench.train.scoring import gather_scores, hidden_at_responses, logprobs_at, output_projection, score_tokens

__all__ = ["CHECKPOINT", "LocalEngine"]


@register_engine("local")
class LocalEngine:
    """Student, teacher and reference in this process; it provides every scoring need."""

    capabilities = frozenset(SCORING_NEEDS)

    def __init__(self, run: dict[str, Any], task, train_rows: list[dict[str, Any]], student_ref: str,
                 teacher_ref: str, method: Method, out_dir: Path, device: str = "cpu"):
        self.run, self.cfg, self.task, self.rows = run, run["train"], task, train_rows
        self.method, self.out_dir, self.device = method, Path(out_dir), device
        self.needs = method.needs
        dtype = self.cfg.get("dtype", "float32")
        self.tokenizer = load_tokenizer(student_ref)
        self.student = load_model(student_ref, dtype=dtype, device=device, trainable=True)
        # One teacher, or a mixed task's teacher per domain: each row is distilled from its domain's.
        self.teachers = {domain: load_model(ref, dtype=dtype, device=device)
                         for domain, ref in teachers_by_domain(teacher_ref).items()}
        self.reference = None
        if "ref_logprobs" in self.needs:
            ref = student_ref if method.reference == "student" else method.reference
            self.reference = load_model(ref, dtype=dtype, device=device)
        self.prompts = encode_prompts(self.tokenizer, task, train_rows)
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=self.cfg["lr"], betas=tuple(self.cfg["adam_betas"]),
            weight_decay=self.cfg["weight_decay"],
        )
        from transformers import get_scheduler

        self.scheduler = get_scheduler(self.cfg["lr_schedule"], self.optimizer, self.cfg["warmup_steps"],
                                       self.cfg["steps"] * self.updates_per_step)
        self.log = RunLog(run, self.out_dir)
        self.ckpt_dir, self.metrics_path = self.log.ckpt_dir, self.log.metrics_path

    @property
    def updates_per_step(self) -> int:
        batch = self.cfg["prompts_per_step"] * self.cfg["rollouts_per_prompt"]
        return self.cfg["ppo_epochs"] * math.ceil(batch / self.cfg["mini_batch_size"])

    # -- checkpoints (the bookkeeping and its invariants: common.RunLog) -----------------
    def save_checkpoint(self, next_step: int) -> None:
        with atomic_path(self.log.checkpoint) as tmp:
            torch.save({"next_step": next_step, "config_hash": self.run["config_hash"],
                        "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, tmp)

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
            if not isinstance(state, dict) or not isinstance(state.get("next_step"), int) or not {
                    "config_hash", "model", "optimizer", "scheduler"} <= state.keys():
                raise ValueError("not a checkpoint of this engine (keys next_step, config_hash, model, "
                                 "optimizer, scheduler)")
        except Exception as e:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... on a bad file
            raise self.log.unreadable_checkpoint(e) from e
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def load_checkpoint(self) -> tuple[int, list[dict[str, Any]]]:
        """The step to start from and the metrics rows of the steps before it."""
        return self.log.resume(self._read_checkpoint, self._restore)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        self.log.write_metrics(rows)

    # -- generation -------------------------------------------------------------------
    def _generate(self, model):
        """``common.Generate`` for ``model``: KV-cached HF ``generate``."""
        def generate(prompts, n, temperature, top_p, max_new_tokens, top_k=0):
            return sample(model, self.tokenizer, prompts, n, temperature, top_p, max_new_tokens,
                          self.cfg["rollout_batch_size"], top_k=top_k)
        return generate

    def _decode(self, responses: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(responses, skip_special_tokens=True)

    # -- state fixed at the start of a run (made from the initial student, kept on disk) --
    def prompt_pool(self) -> list[int]:
        counts = None
        if "prompt_difficulty" in self.needs:
            counts = self.log.fixed("difficulty", torch.no_grad()(lambda: common.profile_difficulty(
                self.method, self.task, self.rows, self.prompts, self.run["seed"], self._generate(self.student),
                self._decode, self.cfg["rollout_batch_size"], self.cfg["max_new_tokens"])))
        return common.prompt_pool(self.method, len(self.prompts), counts)

    @no_grad
    def retention_samples(self) -> dict[str, list]:
        return common.retention_samples(self.cfg, self.prompts, self.run["seed"], self._generate(self.student))

    @no_grad
    def retention(self, fixed: dict[str, list]) -> float:
        """``Ret = mean_t log pi(o_t)`` of the current student on the fixed samples."""
        seqs = self._pack(fixed["prompts"], fixed["responses"])
        logp = self._score(self.student, seqs, self.cfg["temperature"]).logp
        return logp.mean().item()

    # -- rollouts and scoring ---------------------------------------------------------
    def _pack(self, prompts: list[list[int]], responses: list[list[int]]) -> Sequences:
        return sequences_to_device(pack(prompts, responses, self.tokenizer.pad_token_id), self.device)

    def _score(self, model, seqs: Sequences, temperature: float, **kwargs):
        """Chunked scores of the response tokens of ``seqs`` under ``model`` ([N] over the
        response mask; see ``opdbench.train.scoring.score_tokens``)."""
        hidden = hidden_at_responses(model, seqs)
        m = seqs.response_mask.bool()
        weight, bias = output_projection(model)
        return score_tokens(hidden[m], weight, bias, seqs.responses[m], temperature=temperature,
                            chunk=self.cfg.get("scoring_chunk"), **kwargs)

    def _teacher_generate(self, prompts: list[list[int]], domains: list[str | None]):
        """``common.Generate`` for the teacher of each of this step's prompts (its domain's)."""
        if len(self.teachers) == 1:
            return self._generate(next(iter(self.teachers.values())))
        domain_of = {tuple(p): d for p, d in zip(prompts, domains)}

        def generate(asked, n, *args, **kwargs):
            out: list[list[int]] = [[] for _ in range(len(asked) * n)]
            for domain, teacher in self.teachers.items():
                mine = [i for i, p in enumerate(asked) if domain_of[tuple(p)] == domain]
                if mine:
                    drafts = self._generate(teacher)([asked[i] for i in mine], n, *args, **kwargs)
                    for k, i in enumerate(mine):
                        out[i * n:(i + 1) * n] = drafts[k * n:(k + 1) * n]
            return out
        return generate

    def _score_by_teacher(self, seqs: Sequences, domains: list[str | None], temperature: float, **kwargs):
        """``_score`` under the teacher of each row (its domain's, for a teacher per domain)."""
        if len(self.teachers) == 1:
            return self._score(next(iter(self.teachers.values())), seqs, temperature, **kwargs)
        m = seqs.response_mask.bool()
        flat = torch.full(m.shape, -1, dtype=torch.long, device=m.device)
        flat[m] = torch.arange(int(m.sum()), device=m.device)
        parts = []
        for domain, teacher in self.teachers.items():
            rows = torch.tensor([i for i, d in enumerate(domains) if d == domain], dtype=torch.long, device=m.device)
            if len(rows):
                parts.append((flat[rows][m[rows]], self._score(teacher, seqs.select(rows), temperature, **kwargs)))
        return gather_scores(parts, int(m.sum()))

    @no_grad
    def rollout_and_score(self, step: int, progress: Progress, pool: list[int]) -> tuple[ScoredBatch, dict[str, float]]:
        cfg, n = self.cfg, self.cfg["rollouts_per_prompt"]
        idx = prompt_indices(pool, cfg["prompts_per_step"], step, self.run["seed"])
        prompts = [self.prompts[i] for i in idx]
        t0 = time.time()
        domains = [self.rows[i].get("domain") for i in idx]
        responses, prefix_lengths = common.rollouts(self.method, cfg, prompts, progress, self.run["seed"],
                                                    self.tokenizer.eos_token_id, self._generate(self.student),
                                                    self._teacher_generate(prompts, domains))
        t1 = time.time()
        seqs = self._pack([p for p in prompts for _ in range(n)], responses)
        m = seqs.response_mask.bool()
        s = self._score(self.student, seqs, cfg["temperature"], entropy=True, sq_norm=True)
        t2 = time.time()
        # The teacher at temperature 1; its entropy at the rollout temperature (EOPD).
        tch = self._score_by_teacher(seqs, [d for d in domains for _ in range(n)], 1.0,
                                     topk=self.method.topk if "teacher_topk" in self.needs else 0,
                                     entropy="teacher_entropy" in self.needs, entropy_temperature=cfg["temperature"])
        group = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
        batch = ScoredBatch(seqs, to_batch_shape(s.logp, m), to_batch_shape(tch.logp, m),
                            to_batch_shape(s.entropy, m), group, {"sq_norm": to_batch_shape(s.sq_norm, m)})
        if "teacher_topk" in self.needs:
            batch.extras["topk_ids"] = to_batch_shape(tch.topk_ids, m)
            batch.extras["topk_logT"] = to_batch_shape(tch.topk_logp, m)
        if "teacher_entropy" in self.needs:
            batch.extras["teacher_entropy"] = to_batch_shape(tch.entropy, m)
        if "teacher_prefix" in self.needs:
            batch.extras["teacher_token"] = common.teacher_token_mask(prefix_lengths, seqs.response_mask)
        t3 = time.time()
        if self.reference is not None:  # the reference gives the implicit reward's baseline, at temperature 1
            batch.extras["logRef"] = to_batch_shape(self._score(self.reference, seqs, 1.0).logp, m)
        if "outcome" in self.needs:
            problems = [self.rows[i] for i in idx for _ in range(n)]
            batch.extras["outcome"] = torch.tensor([float(s.correct) for s in self.task.score_many(
                self._decode(responses), problems)], device=self.device)
        t4 = time.time()
        return batch, {"seconds_generation": t1 - t0, "seconds_student_scoring": t2 - t1,
                       "seconds_teacher": t3 - t2, "seconds_reference_and_verifier": t4 - t3}

    def student_output(self, mb: ScoredBatch) -> StudentOutput:
        """The current student's log-probs (with gradient) at the sampled tokens and, for
        ``teacher_topk``, at the teacher's top-k ids; chunked, O(n*k) memory."""
        hidden = hidden_at_responses(self.student, mb.seqs)
        m = mb.mask.bool()
        ids = mb.seqs.responses[m][:, None]
        if "topk_ids" in mb.extras:
            ids = torch.cat([ids, mb.extras["topk_ids"][m]], dim=-1)
        weight, bias = output_projection(self.student)
        logp = logprobs_at(hidden[m], weight, bias, ids, self.cfg["temperature"], self.cfg.get("scoring_chunk"))
        logp = to_batch_shape(logp, m)
        return StudentOutput(logS=logp[..., 0], topk_logS=logp[..., 1:] if ids.shape[1] > 1 else None)

    # -- update -----------------------------------------------------------------------
    def update(self, batch: ScoredBatch, progress: Progress) -> dict[str, Any]:
        """One optimizer step per mini-batch, over ``ppo_epochs`` shuffles of the batch; the
        mini-batch is the global batch of its step, taken whole (one piece)."""
        cfg = self.cfg
        self.method.prepare(batch, progress)
        B = batch.logOld.shape[0]
        gen = stream_generator(self.run["seed"], progress.step, STREAM_MINIBATCH)
        losses, grad_norms, per_token = [], [], []
        self.student.train()
        for _ in range(cfg["ppo_epochs"]):
            perm = torch.randperm(B, generator=gen)
            for start in range(0, B, cfg["mini_batch_size"]):
                mb = batch.select(perm[start:start + cfg["mini_batch_size"]].to(self.device))
                terms, diag = self.method.loss(mb, self.student_output(mb), progress)
                loss = batch_loss(terms)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norms.append(torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg["grad_clip"]).item())
                self.optimizer.step()
                self.scheduler.step()
                losses.append(loss.item())
                per_token.append((mb.mask, {k: v.detach() for k, v in diag.items()}))
        return common.update_metrics(losses, grad_norms, self.scheduler.get_last_lr()[0], per_token, batch)

    def train(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        # The fixed state first, from the initial student (a checkpoint's weights are loaded next).
        pool = self.prompt_pool()
        fixed = self.log.fixed("retention_samples", self.retention_samples) if cfg["retention_samples"] else None
        start, rows = self.load_checkpoint()
        bar = tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"],
                   desc=f"train {self.run['run_name']} seed {self.run['seed']}", mininterval=5)
        for step in bar:
            torch.manual_seed(step_seed(self.run["seed"], step, STREAM_TORCH))
            progress = Progress(step, cfg["steps"])
            metrics: dict[str, Any] = {"step": step}
            if fixed and (step % cfg["retention_every"] == 0 or step == cfg["steps"] - 1):
                metrics["retention"] = self.retention(fixed)  # before this step's update
            batch, timing = self.rollout_and_score(step, progress, pool)
            t0 = time.time()
            metrics.update(self.update(batch, progress))
            metrics.update(timing, seconds_update=time.time() - t0)
            metrics.update(common.batch_metrics(batch))
            rows.append(metrics)
            self.write_metrics(rows)  # before the checkpoint of step + 1 (see common.RunLog)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", rkl=f"{metrics['reverse_kl']:.3f}", refresh=False)
            if (step + 1) % cfg["checkpoint_every"] == 0 and step + 1 < cfg["steps"]:
                self.save_checkpoint(step + 1)
        # The run record counts these rows: exactly one per step, or no record at all.
        return self.log.read_metrics(cfg["steps"], exact=True)

    def save_model(self, model_dir: Path) -> None:
        """Weights and tokenizer; the caller writes model.json (the rule's output) after them."""
        model_dir.mkdir(parents=True, exist_ok=True)
        self.student.save_pretrained(model_dir)
        self.tokenizer.save_pretrained(model_dir)


def sequences_to_device(seqs: Sequences, device: str) -> Sequences:
    """Move packed sequences to the training device (a no-op on CPU)."""
    if device == "cpu":
        return seqs
    return Sequences(*(t.to(device) for t in (seqs.input_ids, seqs.attention_mask, seqs.position_ids,
                                              seqs.responses, seqs.response_mask)))

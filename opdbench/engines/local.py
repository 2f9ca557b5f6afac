"""The local engine: one process, transformers + torch, CPU or one GPU.

One training step: sample prompts -> student rollouts (n per prompt, KV-cached
``generate``) -> scoring (behaviour log-probs and entropy of the student, teacher
log-probs of the sampled tokens, and whatever else the method declares it needs) ->
the method's loss on each mini-batch -> AdamW step. Every step is seeded from
(seed, step), so a run resumed from a checkpoint retraces the uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from opdbench.method import Method, Progress, ScoredBatch, StudentOutput
from opdbench.models import load_model, load_tokenizer
from opdbench.rollout import encode_prompts, entropy_from_logits, pack, response_logits, sample, token_logprobs

CHECKPOINT = "last.pt"


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for each (run seed, step, stream)."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**31 - 1)


def prompt_indices(n_prompts: int, per_step: int, step: int, seed: int) -> list[int]:
    """Epoch-wise shuffled prompts, a pure function of the step (resume-safe)."""
    out: list[int] = []
    start = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_prompts)
        perm = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(step_seed(seed, epoch, 1)))
        out += perm[offset:offset + per_step - len(out)].tolist()
    return out


def masked_quantiles(values: torch.Tensor, mask: torch.Tensor, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float]:
    v = values[mask.bool()].float()
    if v.numel() == 0:
        return {}
    return {f"p{int(q * 100):02d}": x for q, x in zip(qs, torch.quantile(v, torch.tensor(qs)).tolist())}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return ((values * mask).sum() / mask.sum().clamp(min=1)).item()


class LocalEngine:
    def __init__(self, run: dict[str, Any], task, train_rows: list[dict[str, Any]], student_ref: str,
                 teacher_ref: str, method: Method, out_dir: Path, device: str = "cpu"):
        self.run, self.cfg, self.task, self.rows = run, run["train"], task, train_rows
        self.method, self.out_dir, self.device = method, Path(out_dir), device
        dtype = self.cfg.get("dtype", "float32")
        self.tokenizer = load_tokenizer(student_ref)
        self.student = load_model(student_ref, dtype=dtype, device=device, trainable=True)
        self.teacher = load_model(teacher_ref, dtype=dtype, device=device)
        self.prompts = encode_prompts(self.tokenizer, task, train_rows)
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=self.cfg["lr"], betas=tuple(self.cfg["adam_betas"]),
            weight_decay=self.cfg["weight_decay"],
        )
        from transformers import get_scheduler

        self.scheduler = get_scheduler(self.cfg["lr_schedule"], self.optimizer, self.cfg["warmup_steps"],
                                       self.cfg["steps"] * self.updates_per_step)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"

    @property
    def updates_per_step(self) -> int:
        batch = self.cfg["prompts_per_step"] * self.cfg["rollouts_per_prompt"]
        return self.cfg["ppo_epochs"] * math.ceil(batch / self.cfg["mini_batch_size"])

    # -- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self, next_step: int) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_dir / (CHECKPOINT + ".tmp")
        torch.save({"next_step": next_step, "config_hash": self.run["config_hash"],
                    "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, tmp)
        os.replace(tmp, self.ckpt_dir / CHECKPOINT)  # atomic: a kill never leaves half a checkpoint

    def load_checkpoint(self) -> int:
        path = self.ckpt_dir / CHECKPOINT
        if not path.exists():
            self.metrics_path.unlink(missing_ok=True)
            return 0
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config_hash"] != self.run["config_hash"]:
            stale = path.with_suffix(".stale")
            os.replace(path, stale)
            print(f"[engine] checkpoint was made under another config; kept as {stale}, starting afresh")
            self.metrics_path.unlink(missing_ok=True)
            return 0
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        step = state["next_step"]
        if self.metrics_path.exists():  # drop metrics of steps after the checkpoint
            rows = [r for r in self.metrics_path.read_text().splitlines() if json.loads(r)["step"] < step]
            self.metrics_path.write_text("".join(r + "\n" for r in rows))
        print(f"[engine] resumed from checkpoint at step {step}")
        return step

    # -- one step ---------------------------------------------------------------------
    @torch.no_grad()
    def rollout_and_score(self, step: int) -> tuple[ScoredBatch, dict[str, float]]:
        cfg = self.cfg
        idx = prompt_indices(len(self.prompts), cfg["prompts_per_step"], step, self.run["seed"])
        prompts = [self.prompts[i] for i in idx]
        t0 = time.time()
        responses = sample(self.student, self.tokenizer, prompts, cfg["rollouts_per_prompt"],
                           cfg["temperature"], cfg["top_p"], cfg["max_new_tokens"], cfg["rollout_batch_size"])
        t1 = time.time()
        n = cfg["rollouts_per_prompt"]
        seqs = pack([p for p in prompts for _ in range(n)], responses, self.tokenizer.pad_token_id)
        seqs = sequences_to_device(seqs, self.device)
        student_logits = response_logits(self.student, seqs) / cfg["temperature"]
        logOld = token_logprobs(student_logits, seqs.responses)
        entropy = entropy_from_logits(student_logits)
        del student_logits
        t2 = time.time()
        logT = token_logprobs(response_logits(self.teacher, seqs), seqs.responses)
        group = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
        batch = ScoredBatch(seqs, logOld, logT, entropy, group)
        if "outcome" in self.method.needs:
            texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
            problems = [self.rows[i] for i in idx for _ in range(n)]
            batch.extras["outcome"] = torch.tensor([float(s.correct) for s in self.task.score_many(texts, problems)])
        t3 = time.time()
        return batch, {"seconds_generation": t1 - t0, "seconds_student_scoring": t2 - t1,
                       "seconds_teacher": t3 - t2}

    def update(self, batch: ScoredBatch, progress: Progress) -> dict[str, Any]:
        cfg = self.cfg
        self.method.prepare(batch, progress)
        B = batch.logOld.shape[0]
        gen = torch.Generator().manual_seed(step_seed(self.run["seed"], progress.step, 2))
        losses, grad_norms, per_token = [], [], []
        self.student.train()
        for _ in range(cfg["ppo_epochs"]):
            perm = torch.randperm(B, generator=gen)
            for start in range(0, B, cfg["mini_batch_size"]):
                mb = batch.select(perm[start:start + cfg["mini_batch_size"]].to(self.device))
                out = StudentOutput.from_logits(response_logits(self.student, mb.seqs), mb.seqs.responses,
                                                cfg["temperature"])
                loss, diag = self.method.loss(mb, out, progress)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norms.append(torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg["grad_clip"]).item())
                self.optimizer.step()
                self.scheduler.step()
                losses.append(loss.item())
                per_token.append((mb.mask, {k: v.detach() for k, v in diag.items()}))
        metrics: dict[str, Any] = {"loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
                                   "lr": self.scheduler.get_last_lr()[0]}
        for key in per_token[0][1]:
            num = sum((d[key] * m).sum() for m, d in per_token)
            den = sum(m.sum() for m, _ in per_token)
            metrics[f"{key}_mean"] = (num / den.clamp(min=1)).item()
        credit = batch.extras["credit"] if "credit" in batch.extras else batch.logT - batch.logOld
        metrics.update({f"credit_{k}": v for k, v in masked_quantiles(credit, batch.mask).items()})
        return metrics

    def train(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        start = self.load_checkpoint()
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"],
                   desc=f"train {self.run['run_name']} seed {self.run['seed']}", mininterval=5)
        for step in bar:
            torch.manual_seed(step_seed(self.run["seed"], step))
            progress = Progress(step, cfg["steps"])
            batch, timing = self.rollout_and_score(step)
            t0 = time.time()
            metrics = self.update(batch, progress)
            mask = batch.mask
            metrics.update(timing, step=step, seconds_update=time.time() - t0,
                           entropy=masked_mean(batch.entropy, mask),
                           reverse_kl=masked_mean(batch.logOld - batch.logT, mask),
                           response_length=mask.sum(-1).mean().item())
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", rkl=f"{metrics['reverse_kl']:.3f}")
            if (step + 1) % cfg["checkpoint_every"] == 0 and step + 1 < cfg["steps"]:
                self.save_checkpoint(step + 1)
        return [json.loads(r) for r in self.metrics_path.read_text().splitlines()]

    def save_model(self, model_dir: Path) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        self.student.save_pretrained(model_dir)
        self.tokenizer.save_pretrained(model_dir)


def sequences_to_device(seqs, device: str):
    """Move packed sequences to the training device (a no-op on CPU)."""
    if device == "cpu":
        return seqs
    return type(seqs)(*(t.to(device) for t in (seqs.input_ids, seqs.attention_mask, seqs.position_ids,
                                                 seqs.responses, seqs.response_mask)))

"""The local engine: one process, transformers + torch, CPU or one GPU.

One training step: sample prompts (from the method's pool) -> rollouts (the student's,
after a teacher prefix where the method asks for one; KV-cached ``generate``) ->
scoring: behaviour log-probs, entropy and ||p||^2 of the student, teacher log-probs of
the sampled tokens, and only what the method declares it needs (teacher top-k and
entropy, reference log-probs, verifier outcome) -> the method's loss on each mini-batch
-> AdamW step. All scoring is chunked over positions (``opdbench.scoring``): O(n*k)
memory, never the T x V logits of two models at once. Every step is seeded from
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

from opdbench.atomic import StateFileError, atomic_path, atomic_write_text, remove_temporaries
from opdbench.engines import diagnostics
from opdbench.method import Method, Progress, ScoredBatch, StudentOutput
from opdbench.models import load_model, load_tokenizer
from opdbench.rollout import Sequences, encode_prompts, pack, sample
from opdbench.scoring import hidden_at_responses, logprobs_at, output_projection, score_tokens

CHECKPOINT = "last.pt"


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for each (run seed, step, stream)."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**31 - 1)


# Random streams of a run (see step_seed): one per use, so adding one changes no other.
# (3 is unused: methods draw from Method.generator.)
STREAM_TORCH, STREAM_PROMPTS, STREAM_MINIBATCH, STREAM_PREFIX, STREAM_FIXED = 0, 1, 2, 4, 5


def stream_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


def prompt_indices(pool: list[int], per_step: int, step: int, seed: int) -> list[int]:
    """Epoch-wise shuffled draws from the prompt pool, a pure function of the step
    (resume-safe). A prompt that appears twice in the pool is drawn twice per epoch."""
    out: list[int] = []
    start = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), len(pool))
        perm = torch.randperm(len(pool), generator=stream_generator(seed, epoch, STREAM_PROMPTS))
        out += [pool[i] for i in perm[offset:offset + per_step - len(out)].tolist()]
    return out


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return ((values * mask).sum() / mask.sum().clamp(min=1)).item()


def to_batch_shape(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-position values [N, ...] of the masked positions back to [B, T, ...]."""
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    out[mask] = values
    return out


class LocalEngine:
    def __init__(self, run: dict[str, Any], task, train_rows: list[dict[str, Any]], student_ref: str,
                 teacher_ref: str, method: Method, out_dir: Path, device: str = "cpu"):
        self.run, self.cfg, self.task, self.rows = run, run["train"], task, train_rows
        self.method, self.out_dir, self.device = method, Path(out_dir), device
        self.needs = method.needs
        dtype = self.cfg.get("dtype", "float32")
        self.tokenizer = load_tokenizer(student_ref)
        self.student = load_model(student_ref, dtype=dtype, device=device, trainable=True)
        self.teacher = load_model(teacher_ref, dtype=dtype, device=device)
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
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"

    @property
    def updates_per_step(self) -> int:
        batch = self.cfg["prompts_per_step"] * self.cfg["rollouts_per_prompt"]
        return self.cfg["ppo_epochs"] * math.ceil(batch / self.cfg["mini_batch_size"])

    # -- checkpoints and the metrics log ------------------------------------------------
    # Invariants (every file below is written whole, by ``opdbench.atomic``):
    # - metrics.jsonl always holds complete rows for steps 0..k-1 of the current run: the
    #   engine keeps the rows in memory and rewrites the file atomically after each step
    #   (steps x one line, small), so a kill leaves the rows of the steps done, never half a row;
    # - the checkpoint for ``next_step`` s is saved after the row of step s-1 is on disk, so a
    #   checkpoint at s always sits beside rows 0..s-1 (rows of later steps are dropped on
    #   resume and retraced). A log that lacks one of them was damaged from outside: resume
    #   refuses rather than finishing a run with steps missing from its record.
    def save_checkpoint(self, next_step: int) -> None:
        with atomic_path(self.ckpt_dir / CHECKPOINT) as tmp:
            torch.save({"next_step": next_step, "config_hash": self.run["config_hash"],
                        "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, tmp)

    def _retrain_hint(self) -> str:
        return (f"delete {self.ckpt_dir} to train this run again from scratch (its fixed state is recomputed), "
                f"or restore the files")

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
            if not isinstance(state, dict) or not isinstance(state.get("next_step"), int) or not {
                    "config_hash", "model", "optimizer", "scheduler"} <= state.keys():
                raise ValueError("not a checkpoint of this engine (keys next_step, config_hash, model, "
                                 "optimizer, scheduler)")
        except Exception as e:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... on a bad file
            raise StateFileError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); it is truncated or "
                                 f"corrupted, and no earlier checkpoint is kept: {self._retrain_hint()}") from e
        return state

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def read_metrics(self, steps: int, checkpoint: Path | None = None, exact: bool = False) -> list[dict[str, Any]]:
        """The rows of steps 0..steps-1 from metrics.jsonl, checked: each line a JSON row with
        an integer ``step``, the first ``steps`` rows exactly steps 0..steps-1. Rows after them
        (steps a resumed run retraces) are dropped; so is an unterminated, unparseable last line
        (an append cut short by a kill, as earlier versions wrote the log); with ``exact``,
        there must be no rows after them. Anything else raises ``StateFileError`` naming
        metrics.jsonl (and the checkpoint it must agree with)."""
        against = (f" beside checkpoint {checkpoint} (at step {steps}: the log must hold the rows of steps "
                   f"0..{steps - 1})" if checkpoint is not None else "")
        hint = self._retrain_hint() if checkpoint is not None else "train this run again from scratch"
        if not self.metrics_path.exists():
            if steps == 0:
                return []
            raise StateFileError(f"metrics log {self.metrics_path} is missing{against}; {hint}")
        lines = self.metrics_path.read_text(errors="replace").split("\n")
        rows: list[dict[str, Any]] = []
        for i, line in enumerate(lines):
            if not line.strip():
                if i == len(lines) - 1:
                    continue
                raise StateFileError(f"metrics log {self.metrics_path}: line {i + 1} is empty{against}; {hint}")
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or type(row.get("step")) is not int:
                    raise ValueError("not a row with an integer 'step'")
            except ValueError as e:
                if i == len(lines) - 1 and len(rows) >= steps:  # a cut append after the rows needed
                    print(f"[engine] {self.metrics_path}: dropped an unfinished last line (a step after {steps - 1})")
                    break
                raise StateFileError(f"metrics log {self.metrics_path}: line {i + 1} is unreadable ({e}){against}; "
                                     f"{hint}") from e
            rows.append(row)
        found = [r["step"] for r in rows[:steps]]
        if found != list(range(steps)):
            missing = sorted(set(range(steps)) - set(found))
            what = (f"steps {_ranges(missing)} are missing" if missing else
                    f"its first {steps} rows are steps {_ranges(found)}, not 0..{steps - 1} in order")
            raise StateFileError(f"metrics log {self.metrics_path} disagrees: {what}{against}; {hint}")
        if exact and len(rows) != steps:
            raise StateFileError(f"metrics log {self.metrics_path} holds {len(rows)} rows after {steps} steps; {hint}")
        return rows[:steps]

    def load_checkpoint(self) -> tuple[int, list[dict[str, Any]]]:
        """The step to start from and the metrics rows of the steps before it."""
        remove_temporaries(self.ckpt_dir)  # what a kill mid-save left (this run's directory only)
        path = self.ckpt_dir / CHECKPOINT
        if not path.exists():
            self.metrics_path.unlink(missing_ok=True)
            return 0, []
        state = self._read_checkpoint(path)
        if state["config_hash"] != self.run["config_hash"]:
            stale = path.with_suffix(".stale")
            os.replace(path, stale)
            print(f"[engine] checkpoint was made under another config; kept as {stale}, starting afresh")
            self.metrics_path.unlink(missing_ok=True)
            return 0, []
        step = state["next_step"]
        rows = self.read_metrics(step, checkpoint=path)  # before touching the model: refuse early
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.write_metrics(rows)  # drop metrics of steps after the checkpoint
        print(f"[engine] resumed from checkpoint at step {step}")
        return step, rows

    # -- state fixed at the start of a run (made from the initial student, kept on disk) --
    def _fixed(self, name: str, build) -> Any:
        """Computed once from the initial student and stored next to the checkpoints, so a
        resumed run reuses it instead of recomputing it from a trained student. ``train``
        calls this before it loads a checkpoint, so the student is the initial one here and
        an unreadable file can be recomputed (it is a deterministic function of the initial
        student and the config)."""
        path = self.ckpt_dir / f"{name}.json"
        if path.exists():
            try:
                state = json.loads(path.read_text(errors="replace"))
                if not isinstance(state, dict) or not {"config_hash", "value"} <= state.keys():
                    raise ValueError("keys config_hash and value expected")
            except ValueError as e:
                print(f"[engine] {path} is unreadable ({e}); recomputing it from the initial student")
            else:
                if state["config_hash"] == self.run["config_hash"]:
                    return state["value"]
        value = build()
        atomic_write_text(path, json.dumps({"config_hash": self.run["config_hash"], "value": value}))
        return value

    def prompt_pool(self) -> list[int]:
        if "prompt_difficulty" not in self.needs:
            return list(range(len(self.prompts)))
        counts = self._fixed("difficulty", self.profile_difficulty)
        spec = self.method.difficulty_profile()
        pool = self.method.prompt_pool({int(k): v for k, v in counts.items()}, spec["n_samples"])
        mid = sum(0 < c < spec["n_samples"] for c in counts.values())
        print(f"[engine] prompt pool: {len(counts)} prompts profiled, {mid} of mid difficulty, pool size {len(pool)}")
        return pool

    def _fixed_prompt_subset(self, count: int, slot: int) -> list[int]:
        """``count`` random training prompts for a once-per-run draw (``slot`` tells the
        draws apart); also seeds torch for the sampling that follows."""
        gen = stream_generator(self.run["seed"], slot, STREAM_FIXED)
        torch.manual_seed(step_seed(self.run["seed"], slot + 1, STREAM_FIXED))
        return torch.randperm(len(self.prompts), generator=gen)[:count].tolist()

    @torch.no_grad()
    def profile_difficulty(self) -> dict[int, int]:
        """The initial student's number of correct answers out of n per training prompt."""
        spec = self.method.difficulty_profile()
        n, count = spec["n_samples"], spec.get("prompts") or len(self.prompts)
        idx = sorted(self._fixed_prompt_subset(count, slot=0))
        counts: dict[int, int] = {}
        batch = max(1, self.cfg["rollout_batch_size"] // n)
        for start in tqdm(range(0, len(idx), batch), desc="difficulty profile", mininterval=5):
            chunk = idx[start:start + batch]
            responses = sample(self.student, self.tokenizer, [self.prompts[i] for i in chunk], n,
                               spec["temperature"], spec["top_p"], self.cfg["max_new_tokens"],
                               self.cfg["rollout_batch_size"], top_k=spec["top_k"])
            texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
            scores = self.task.score_many(texts, [self.rows[i] for i in chunk for _ in range(n)])
            for j, i in enumerate(chunk):
                counts[i] = sum(int(s.correct) for s in scores[j * n:(j + 1) * n])
        return counts

    @torch.no_grad()
    def retention_samples(self) -> dict[str, list]:
        """A fixed set of responses of the initial student (REOPOLD Table 2's retention)."""
        prompts = [self.prompts[i] for i in self._fixed_prompt_subset(self.cfg["retention_samples"], slot=2)]
        responses = sample(self.student, self.tokenizer, prompts, 1, self.cfg["temperature"], self.cfg["top_p"],
                           self.cfg["max_new_tokens"], self.cfg["rollout_batch_size"])
        return {"prompts": prompts, "responses": responses}

    @torch.no_grad()
    def retention(self, fixed: dict[str, list]) -> float:
        """``Ret = mean_t log pi(o_t)`` of the current student on the fixed samples."""
        seqs = self._pack(fixed["prompts"], fixed["responses"])
        logp = self._score(self.student, seqs, self.cfg["temperature"]).logp
        return logp.mean().item()

    # -- rollouts ---------------------------------------------------------------------
    def _pack(self, prompts: list[list[int]], responses: list[list[int]]) -> Sequences:
        return sequences_to_device(pack(prompts, responses, self.tokenizer.pad_token_id), self.device)

    @torch.no_grad()
    def rollouts(self, prompts: list[list[int]], progress: Progress) -> tuple[list[list[int]], list[int]]:
        """n rollouts per prompt (prompt-major) and each one's teacher-prefix length."""
        cfg, n = self.cfg, self.cfg["rollouts_per_prompt"]
        sample_args = (cfg["temperature"], cfg["top_p"])
        if "teacher_prefix" not in self.needs:
            responses = sample(self.student, self.tokenizer, prompts, n, *sample_args, cfg["max_new_tokens"],
                               cfg["rollout_batch_size"])
            return responses, [0] * len(responses)
        expanded = [p for p in prompts for _ in range(n)]
        gen = stream_generator(self.run["seed"], progress.step, STREAM_PREFIX)
        lengths = self.method.prefix_lengths(len(expanded), cfg["max_new_tokens"], progress, gen)
        prefixes: list[list[int]] = [[] for _ in expanded]
        todo = [i for i, length in enumerate(lengths) if length > 0]
        if todo:
            drafts = sample(self.teacher, self.tokenizer, [expanded[i] for i in todo], 1, *sample_args,
                            max(lengths[i] for i in todo), cfg["rollout_batch_size"])
            for i, draft in zip(todo, drafts):
                prefixes[i] = draft[:lengths[i]]  # a draft may end (eos) before its length
        eos = self.tokenizer.eos_token_id
        budget = [cfg["max_new_tokens"] - len(p) for p in prefixes]
        todo = [i for i, p in enumerate(prefixes) if budget[i] > 0 and not (p and p[-1] == eos)]
        responses = [list(p) for p in prefixes]
        if todo:
            conts = sample(self.student, self.tokenizer, [expanded[i] + prefixes[i] for i in todo], 1,
                           *sample_args, max(budget[i] for i in todo), cfg["rollout_batch_size"])
            for i, cont in zip(todo, conts):
                responses[i] += cont[:budget[i]]
        return responses, [len(p) for p in prefixes]

    # -- scoring ----------------------------------------------------------------------
    def _score(self, model, seqs: Sequences, temperature: float, **kwargs):
        """Chunked scores of the response tokens of ``seqs`` under ``model`` ([N] over the
        response mask; see ``opdbench.scoring.score_tokens``)."""
        hidden = hidden_at_responses(model, seqs)
        m = seqs.response_mask.bool()
        weight, bias = output_projection(model)
        return score_tokens(hidden[m], weight, bias, seqs.responses[m], temperature=temperature,
                            chunk=self.cfg.get("scoring_chunk"), **kwargs)

    @torch.no_grad()
    def rollout_and_score(self, step: int, progress: Progress, pool: list[int]) -> tuple[ScoredBatch, dict[str, float]]:
        cfg, n = self.cfg, self.cfg["rollouts_per_prompt"]
        idx = prompt_indices(pool, cfg["prompts_per_step"], step, self.run["seed"])
        prompts = [self.prompts[i] for i in idx]
        t0 = time.time()
        responses, prefix_lengths = self.rollouts(prompts, progress)
        t1 = time.time()
        seqs = self._pack([p for p in prompts for _ in range(n)], responses)
        m = seqs.response_mask.bool()
        s = self._score(self.student, seqs, cfg["temperature"], entropy=True, sq_norm=True)
        t2 = time.time()
        # The teacher at temperature 1; its entropy at the rollout temperature (EOPD).
        tch = self._score(self.teacher, seqs, 1.0, topk=self.method.topk if "teacher_topk" in self.needs else 0,
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
            positions = torch.arange(seqs.response_length, device=self.device)
            lengths = torch.tensor(prefix_lengths, device=self.device)
            batch.extras["teacher_token"] = (positions[None, :] < lengths[:, None]).float() * seqs.response_mask
        t3 = time.time()
        if self.reference is not None:  # the reference gives the implicit reward's baseline, at temperature 1
            batch.extras["logRef"] = to_batch_shape(self._score(self.reference, seqs, 1.0).logp, m)
        if "outcome" in self.needs:
            texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
            problems = [self.rows[i] for i in idx for _ in range(n)]
            batch.extras["outcome"] = torch.tensor([float(s.correct) for s in self.task.score_many(texts, problems)],
                                                   device=self.device)
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
                loss, diag = self.method.loss(mb, self.student_output(mb), progress)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norms.append(torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg["grad_clip"]).item())
                self.optimizer.step()
                self.scheduler.step()
                losses.append(loss.item())
                per_token.append((mb.mask, {k: v.detach() for k, v in diag.items()}))
        metrics: dict[str, Any] = {"loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
                                   "lr": self.scheduler.get_last_lr()[0]}
        for key in per_token[0][1]:  # the method's per-token diagnostics, averaged over response tokens
            num = sum((d[key] * m).sum() for m, d in per_token)
            den = sum(m.sum() for m, _ in per_token)
            metrics[f"{key}_mean"] = (num / den.clamp(min=1)).item()
        metrics.update(diagnostics.credit_diagnostics(batch))
        return metrics

    def train(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        # The fixed state first, from the initial student (a checkpoint's weights are loaded next).
        pool = self.prompt_pool()
        fixed = self._fixed("retention_samples", self.retention_samples) if cfg["retention_samples"] else None
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
            mask = batch.mask
            metrics.update(timing, seconds_update=time.time() - t0,
                           entropy=masked_mean(batch.entropy, mask),
                           reverse_kl=masked_mean(batch.logOld - batch.logT, batch.student_tokens),
                           response_length=mask.sum(-1).mean().item())
            if "teacher_token" in batch.extras:
                metrics["teacher_token_fraction"] = masked_mean(batch.extras["teacher_token"], mask)
            if "outcome" in batch.extras:
                metrics["train_accuracy"] = batch.extras["outcome"].mean().item()
            rows.append(metrics)
            self.write_metrics(rows)  # before the checkpoint of step + 1 (see save_checkpoint)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", rkl=f"{metrics['reverse_kl']:.3f}", refresh=False)
            if (step + 1) % cfg["checkpoint_every"] == 0 and step + 1 < cfg["steps"]:
                self.save_checkpoint(step + 1)
        # The run record counts these rows: exactly one per step, or no record at all.
        return self.read_metrics(cfg["steps"], exact=True)

    def save_model(self, model_dir: Path) -> None:
        """Weights and tokenizer; the caller writes model.json (the rule's output) after them."""
        model_dir.mkdir(parents=True, exist_ok=True)
        self.student.save_pretrained(model_dir)
        self.tokenizer.save_pretrained(model_dir)


def _ranges(steps: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out: list[str] = []
    for s in steps:
        if out and s == last + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
        last = s
    return ", ".join(out)


def sequences_to_device(seqs: Sequences, device: str) -> Sequences:
    """Move packed sequences to the training device (a no-op on CPU)."""
    if device == "cpu":
        return seqs
    return Sequences(*(t.to(device) for t in (seqs.input_ids, seqs.attention_mask, seqs.position_ids,
                                              seqs.responses, seqs.response_mask)))

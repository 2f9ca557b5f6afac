"""What every engine does the same way, whatever runs its models.

- seeding: every step is seeded from (run seed, step, stream), so a resumed run retraces
  the uninterrupted one and adding a random stream changes no other;
- prompt sampling: epoch-wise shuffled draws from the method's prompt pool;
- the run's log (``RunLog``): metrics.jsonl, the checkpoint's bookkeeping, the state fixed
  at the start of a run, and the refusals when they disagree;
- planning from the initial student and the teacher through a ``Generate`` callable:
  Uni-OPD's difficulty profile, the retention samples, teacher-written prefixes;
- the per-step metrics (keys declared in ``opdbench.train.metrics_schema``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Protocol

from opdbench.lazy import torch
from tqdm import tqdm

from opdbench.atomic import StateFileError, atomic_write_text, remove_temporaries
from opdbench.train import diagnostics
from opdbench.method import Method, Progress, ScoredBatch

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


def fixed_prompt_subset(seed: int, n_prompts: int, count: int, slot: int) -> list[int]:
    """``count`` random training prompts for a once-per-run draw (``slot`` tells the
    draws apart); also seeds torch for the sampling that follows."""
    gen = stream_generator(seed, slot, STREAM_FIXED)
    torch.manual_seed(step_seed(seed, slot + 1, STREAM_FIXED))
    return torch.randperm(n_prompts, generator=gen)[:count].tolist()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return ((values * mask).sum() / mask.sum().clamp(min=1)).item()


def to_batch_shape(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-position values [N, ...] of the masked positions back to [B, T, ...]."""
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    out[mask] = values
    return out


class Generate(Protocol):
    """An engine's sampler for one model: n responses per prompt (prompt-major), each cut
    after its first eos, as token ids."""

    def __call__(self, prompts: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
                 top_k: int = 0) -> list[list[int]]: ...


# -- planning from the models -----------------------------------------------------------
def profile_difficulty(method: Method, task, rows: list[dict[str, Any]], prompts: list[list[int]], seed: int,
                       generate: Generate, decode: Callable[[list[list[int]]], list[str]], sequences_per_call: int,
                       max_new_tokens: int) -> dict[int, int]:
    """The initial student's number of correct answers out of n per training prompt
    (need ``prompt_difficulty``), about ``sequences_per_call`` responses per ``generate`` call."""
    spec = method.difficulty_profile()
    n, count = spec["n_samples"], spec.get("prompts") or len(prompts)
    idx = sorted(fixed_prompt_subset(seed, len(prompts), count, slot=0))
    counts: dict[int, int] = {}
    batch_prompts = max(1, sequences_per_call // n)
    for start in tqdm(range(0, len(idx), batch_prompts), desc="difficulty profile", mininterval=5):
        chunk = idx[start:start + batch_prompts]
        responses = generate([prompts[i] for i in chunk], n, spec["temperature"], spec["top_p"], max_new_tokens,
                             top_k=spec["top_k"])
        scores = task.score_many(decode(responses), [rows[i] for i in chunk for _ in range(n)])
        for j, i in enumerate(chunk):
            counts[i] = sum(int(s.correct) for s in scores[j * n:(j + 1) * n])
    return counts


def prompt_pool(method: Method, n_prompts: int, counts: dict[int, int] | None) -> list[int]:
    """The prompts a run draws from: all of them, or the method's pool from the difficulty
    profile ``counts`` (need ``prompt_difficulty``)."""
    if counts is None:
        return list(range(n_prompts))
    spec = method.difficulty_profile()
    pool = method.prompt_pool({int(k): v for k, v in counts.items()}, spec["n_samples"])
    mid = sum(0 < c < spec["n_samples"] for c in counts.values())
    print(f"[engine] prompt pool: {len(counts)} prompts profiled, {mid} of mid difficulty, pool size {len(pool)}")
    return pool


def retention_samples(cfg: dict[str, Any], prompts: list[list[int]], seed: int, generate: Generate
                      ) -> dict[str, list]:
    """A fixed set of responses of the initial student (REOPOLD Table 2's retention)."""
    chosen = [prompts[i] for i in fixed_prompt_subset(seed, len(prompts), cfg["retention_samples"], slot=2)]
    responses = generate(chosen, 1, cfg["temperature"], cfg["top_p"], cfg["max_new_tokens"])
    return {"prompts": chosen, "responses": responses}


def rollouts(method: Method, cfg: dict[str, Any], prompts: list[list[int]], progress: Progress, seed: int,
             eos: int, student: Generate, teacher: Generate) -> tuple[list[list[int]], list[int]]:
    """n rollouts per prompt (prompt-major) and each one's teacher-prefix length: the
    student's, or (need ``teacher_prefix``) the teacher's first tokens, the method's
    ``prefix_lengths`` of them, continued by the student up to ``max_new_tokens``."""
    n = cfg["rollouts_per_prompt"]
    sample_args = (cfg["temperature"], cfg["top_p"])
    if "teacher_prefix" not in method.needs:
        responses = student(prompts, n, *sample_args, cfg["max_new_tokens"])
        return responses, [0] * len(responses)
    expanded = [p for p in prompts for _ in range(n)]
    gen = stream_generator(seed, progress.step, STREAM_PREFIX)
    lengths = method.prefix_lengths(len(expanded), cfg["max_new_tokens"], progress, gen)
    prefixes: list[list[int]] = [[] for _ in expanded]
    todo = [i for i, length in enumerate(lengths) if length > 0]
    if todo:
        drafts = teacher([expanded[i] for i in todo], 1, *sample_args, max(lengths[i] for i in todo))
        for i, draft in zip(todo, drafts):
            prefixes[i] = draft[:lengths[i]]  # a draft may end (eos) before its length
    budget = [cfg["max_new_tokens"] - len(p) for p in prefixes]
    todo = [i for i, p in enumerate(prefixes) if budget[i] > 0 and not (p and p[-1] == eos)]
    responses = [list(p) for p in prefixes]
    if todo:
        conts = student([expanded[i] + prefixes[i] for i in todo], 1, *sample_args, max(budget[i] for i in todo))
        for i, cont in zip(todo, conts):
            responses[i] += cont[:budget[i]]
    return responses, [len(p) for p in prefixes]


def teacher_token_mask(prefix_lengths: list[int], response_mask: torch.Tensor) -> torch.Tensor:
    """extras["teacher_token"]: 1 on the response tokens the teacher wrote."""
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    lengths = torch.tensor(prefix_lengths, device=response_mask.device)
    return (positions[None, :] < lengths[:, None]).float() * response_mask


# -- per-step metrics (keys: opdbench.train.metrics_schema) ------------------------------
def update_metrics(losses: list[float], grad_norms: list[float], lr: float,
                   per_token: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], batch: ScoredBatch
                   ) -> dict[str, Any]:
    """The optimizer steps' means, the method's per-token diagnostics averaged over the
    response tokens of every mini-batch ((mask, {name: [B, T]}) per optimizer step), and
    the credit diagnostics of the rollout batch."""
    metrics: dict[str, Any] = {"loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
                               "lr": lr}
    for key in per_token[0][1]:
        num = sum((d[key] * m).sum() for m, d in per_token)
        den = sum(m.sum() for m, _ in per_token)
        metrics[f"{key}_mean"] = (num / den.clamp(min=1)).item()
    metrics.update(diagnostics.credit_diagnostics(batch))
    return metrics


def batch_metrics(batch: ScoredBatch) -> dict[str, Any]:
    """What the rollout batch itself shows: the student's entropy, its reverse KL to the
    teacher on the tokens it sampled, response length, teacher-prefix share and accuracy."""
    mask = batch.mask
    out: dict[str, Any] = {"entropy": masked_mean(batch.entropy, mask),
                           "reverse_kl": masked_mean(batch.logOld - batch.logT, batch.student_tokens),
                           "response_length": mask.sum(-1).mean().item()}
    if "teacher_token" in batch.extras:
        out["teacher_token_fraction"] = masked_mean(batch.extras["teacher_token"], mask)
    if "outcome" in batch.extras:
        out["train_accuracy"] = batch.extras["outcome"].mean().item()
    return out


# -- the run's log: metrics.jsonl, checkpoint bookkeeping, fixed state ---------------------
class RunLog:
    """The files of one run that every engine keeps the same way.

    Invariants (every file below is written whole, by ``opdbench.atomic``):
    - metrics.jsonl always holds complete rows for steps 0..k-1 of the current run: the
      engine keeps the rows in memory and rewrites the file atomically after each step
      (steps x one line, small), so a kill leaves the rows of the steps done, never half a row;
    - the checkpoint for ``next_step`` s is saved after the row of step s-1 is on disk, so a
      checkpoint at s always sits beside rows 0..s-1 (rows of later steps are dropped on
      resume and retraced). A log that lacks one of them was damaged from outside: resume
      refuses rather than finishing a run with steps missing from its record.
    The checkpoint's content is the engine's; it holds at least ``next_step`` and ``config_hash``.
    """

    def __init__(self, run: dict[str, Any], out_dir: Path, checkpoint_name: str = CHECKPOINT):
        self.run = run
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.checkpoint = self.ckpt_dir / checkpoint_name
        self.metrics_path = self.out_dir / "metrics.jsonl"

    def retrain_hint(self) -> str:
        return (f"delete {self.ckpt_dir} to train this run again from scratch (its fixed state is recomputed), "
                f"or restore the files")

    def unreadable_checkpoint(self, error: Exception) -> StateFileError:
        return StateFileError(f"checkpoint {self.checkpoint} is unreadable ({type(error).__name__}: {error}); it is "
                              f"truncated or corrupted, and no earlier checkpoint is kept: {self.retrain_hint()}")

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
        hint = self.retrain_hint() if checkpoint is not None else "train this run again from scratch"
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

    def resume(self, read: Callable[[Path], dict[str, Any]], restore: Callable[[dict[str, Any]], None]
               ) -> tuple[int, list[dict[str, Any]]]:
        """The step to start from and the metrics rows of the steps before it. ``read`` loads
        the engine's checkpoint (a dict with ``next_step`` and ``config_hash``; it raises
        ``unreadable_checkpoint`` on a bad file); ``restore`` puts its state back into the
        engine, once the log is known to agree with it."""
        remove_temporaries(self.ckpt_dir)  # what a kill mid-save left (this run's directory only)
        path = self.checkpoint
        if not path.exists():
            self.metrics_path.unlink(missing_ok=True)
            return 0, []
        state = read(path)
        if state["config_hash"] != self.run["config_hash"]:
            stale = path.with_suffix(".stale")
            os.replace(path, stale)
            print(f"[engine] checkpoint was made under another config; kept as {stale}, starting afresh")
            self.metrics_path.unlink(missing_ok=True)
            return 0, []
        step = state["next_step"]
        rows = self.read_metrics(step, checkpoint=path)  # before touching the model: refuse early
        restore(state)
        self.write_metrics(rows)  # drop metrics of steps after the checkpoint
        print(f"[engine] resumed from checkpoint at step {step}")
        return step, rows

    def fixed(self, name: str, build: Callable[[], Any]) -> Any:
        """State computed once from the initial student and stored next to the checkpoints,
        so a resumed run reuses it instead of recomputing it from a trained student. An
        engine calls this before it loads a checkpoint, so the student is the initial one
        and an unreadable file can be recomputed (it is a deterministic function of the
        initial student and the config)."""
        return fixed_state(self.ckpt_dir / f"{name}.json", self.run["config_hash"], build)


def fixed_state(path: Path, config_hash: str, build: Callable[[], Any], **record: Any) -> Any:
    """``build()``'s value, kept at ``path`` with the run's config hash (and ``record``'s keys): a
    later call of the same run reads it back; a file of another config, or an unreadable one, is
    rebuilt (it is a deterministic function of the initial student and the config)."""
    if path.exists():
        try:
            state = json.loads(path.read_text(errors="replace"))
            if not isinstance(state, dict) or not {"config_hash", "value"} <= state.keys():
                raise ValueError("keys config_hash and value expected")
        except ValueError as e:
            print(f"[engine] {path} is unreadable ({e}); recomputing it from the initial student")
        else:
            if state["config_hash"] == config_hash:
                return state["value"]
    value = build()
    atomic_write_text(path, json.dumps({"config_hash": config_hash, **record, "value": value}))
    return value


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

"""What a method is: what it needs from scoring, and how a scored batch becomes a loss.

A method file in ``methods/`` subclasses ``Method``, sets ``name``, ``defaults`` (its
paper's hyperparameters) and ``needs`` (extra scoring beyond the teacher's log-probs of
the sampled tokens), and implements ``loss``. Optional hooks: ``prepare`` (batch-level
quantities computed once per rollout batch, before the mini-batch updates).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from opdbench.blocks import aggregate, clipped_policy_loss
from opdbench.errors import ConfigError
from opdbench.rollout import Sequences, token_logprobs

# What the engine can score on request (a method lists the ones it needs).
SCORING_NEEDS = ("teacher_topk", "teacher_entropy", "ref_logprobs", "outcome", "teacher_prefix")


@dataclass
class ScoredBatch:
    """Rollouts with everything scored for them; per-token tensors are [B, T], detached."""

    seqs: Sequences
    logOld: torch.Tensor  # behaviour-policy log-prob of each sampled token
    logT: torch.Tensor  # teacher log-prob of each sampled token (temperature 1)
    entropy: torch.Tensor  # student entropy H_S at each position (behaviour policy)
    group: torch.Tensor  # [B] index of the prompt each rollout answers
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def mask(self) -> torch.Tensor:
        return self.seqs.response_mask

    def select(self, idx: torch.Tensor) -> "ScoredBatch":
        return ScoredBatch(
            seqs=self.seqs.select(idx), logOld=self.logOld[idx], logT=self.logT[idx],
            entropy=self.entropy[idx], group=self.group[idx],
            extras={k: v[idx] for k, v in self.extras.items()},
        )


@dataclass
class StudentOutput:
    """The current student on a mini-batch: ``logS`` carries the gradient."""

    logits: torch.Tensor  # [B, T, V] response-position logits (temperature applied)
    logS: torch.Tensor  # [B, T] log-prob of the sampled tokens

    @classmethod
    def from_logits(cls, logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> "StudentOutput":
        logits = logits / temperature if temperature != 1.0 else logits
        return cls(logits=logits, logS=token_logprobs(logits, tokens))

    def logprobs_at(self, ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary log-softmax gathered at ``ids`` [B, T, k] (with gradient)."""
        return torch.gather(torch.log_softmax(self.logits, dim=-1), -1, ids)


@dataclass(frozen=True)
class Progress:
    step: int  # 0-based index of the current training step
    total_steps: int

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total_steps)


class Method:
    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}
    # The paper's own training settings (keys of the base config), used in `paper` mode.
    paper_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, hparams: dict[str, Any] | None = None, train: dict[str, Any] | None = None, seed: int = 0):
        self.hp = self.resolve_hparams(hparams or {})
        self.train = dict(train or {})
        self.seed = seed

    @classmethod
    def resolve_hparams(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(cls.defaults))
        if unknown:
            valid = ", ".join(sorted(cls.defaults)) or "(none)"
            raise ConfigError(f"method '{cls.name}' has no hyperparameter '{unknown[0]}'. Valid: {valid}")
        return {**cls.defaults, **overrides}

    # -- hooks ------------------------------------------------------------------------
    def prepare(self, batch: ScoredBatch, progress: Progress) -> None:
        """Compute batch-level quantities (stored in ``batch.extras``) before the updates."""

    def loss(self, mb: ScoredBatch, student: StudentOutput, progress: Progress
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one mini-batch and per-token diagnostics ({'credit': [B, T], ...})."""
        raise NotImplementedError

    # -- shared helper ----------------------------------------------------------------
    def policy_gradient(self, mb: ScoredBatch, student: StudentOutput, advantages: torch.Tensor,
                        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO-clipped policy-gradient term with the run's clip and aggregation settings."""
        t = self.train
        per_token, stats = clipped_policy_loss(
            student.logS, mb.logOld, advantages.detach(), t["clip_ratio_low"], t["clip_ratio_high"],
            t.get("clip_ratio_c"),
        )
        mask = mb.mask if mask is None else mask
        return aggregate(per_token, mask, t["loss_agg_mode"]), stats

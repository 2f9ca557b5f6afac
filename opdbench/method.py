"""What a method is: what it needs from scoring, how it plans rollouts and samples
prompts, and how a scored batch becomes a loss.

A method file in ``methods/`` subclasses ``Method``, sets ``name``, ``defaults`` (its
paper's hyperparameters), ``schema`` (each hyperparameter's JSON-schema type and range,
checked when the workflow starts) and ``needs`` (scoring beyond the teacher's log-probs of the
sampled tokens, from ``SCORING_NEEDS``), and implements ``loss``, which returns the loss as
per-token terms (``LossTerm``: values, mask, aggregation, weight) that the engine reduces
over the mini-batch of one optimizer step (``opdbench.train.losses``). Optional hooks:

- ``prepare(batch, progress)``: batch-level quantities computed once per rollout batch,
  before the mini-batch updates (entropy quantiles, group calibration, random masks);
- ``prefix_lengths(n, max_new_tokens, progress, generator)`` (need ``teacher_prefix``):
  how many tokens of each rollout the teacher writes before the student continues;
- ``prompt_pool(correct_counts, n_samples)`` (need ``prompt_difficulty``): the pool of
  training prompts, from the initial student's correct counts;
- ``topk`` (need ``teacher_topk``): how many teacher top-k ids to score;
- ``reference`` (need ``ref_logprobs``): which frozen model gives ``logRef``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from opdbench.lazy import torch

from opdbench.blocks import clipped_policy_loss
from opdbench.train.losses import LossTerm
from opdbench.errors import ConfigError
from opdbench.train.rollout import Sequences

# What the engine can score or plan on request (a method lists the ones it needs):
#   teacher_topk      extras["topk_ids"], extras["topk_logT"] [B, T, k]; the student's top-k forward
#                     KL against them (``blocks.topk_forward_kl``: from student.topk_logS, or from
#                     student.topk_fkl where the engine computes it in its forward, as verl does)
#   student_topk      student.topk_logS [B, T, k] itself (a top-k term other than the forward KL)
#   teacher_entropy   extras["teacher_entropy"] [B, T] (full vocabulary, rollout temperature)
#   ref_logprobs      extras["logRef"] [B, T] from a frozen reference model
#   outcome           extras["outcome"] [B] the verifier's 0/1 per rollout
#   teacher_prefix    extras["teacher_token"] [B, T] 1 on tokens the teacher generated
#   prompt_difficulty the initial student's correct counts, passed to ``prompt_pool``
SCORING_NEEDS = ("teacher_topk", "student_topk", "teacher_entropy", "ref_logprobs", "outcome", "teacher_prefix",
                 "prompt_difficulty")


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

    @property
    def student_tokens(self) -> torch.Tensor:
        """Response tokens the student sampled (all of them unless the teacher wrote a prefix)."""
        if "teacher_token" in self.extras:
            return self.mask * (1.0 - self.extras["teacher_token"])
        return self.mask

    def select(self, idx: torch.Tensor) -> "ScoredBatch":
        return ScoredBatch(
            seqs=self.seqs.select(idx), logOld=self.logOld[idx], logT=self.logT[idx],
            entropy=self.entropy[idx], group=self.group[idx],
            extras={k: v[idx] for k, v in self.extras.items()},
        )


@dataclass
class StudentOutput:
    """The current student on a mini-batch; both tensors carry the gradient.

    Computed by the engine in O(n*k) memory (``opdbench.train.scoring.logprobs_at``): the
    full-vocabulary log-softmax of the student, at the sampled tokens and, for methods
    that need ``teacher_topk``, at the teacher's top-k ids.
    """

    logS: torch.Tensor  # [B, T] log-prob of the sampled tokens
    topk_logS: torch.Tensor | None = None  # [B, T, k] log-prob at extras["topk_ids"]
    # [B, T] sum_{v in TopK_T} pT(v) (log pT(v) - log pS(v)) with the teacher's raw top-k, where the
    # engine computes it in the student's forward instead of handing out topk_logS (verl)
    topk_fkl: torch.Tensor | None = None


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
    # One JSON schema per hyperparameter (type, range, enum), as tasks declare their generator
    # schemas: a config value of the wrong type or range stops the workflow at start-up.
    schema: ClassVar[dict[str, dict[str, Any]]] = {}
    # The paper's own training settings (keys of the base config), used in `paper` mode.
    paper_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, hparams: dict[str, Any] | None = None, train: dict[str, Any] | None = None, seed: int = 0):
        self.hp = self.resolve_hparams(hparams or {})
        self.needs = self.needs_of(self.hp)  # this run's needs (an instance's; the class's are the default)
        self.train = dict(train or {})
        self.seed = seed

    @classmethod
    def needs_of(cls, hp: dict[str, Any]) -> frozenset[str]:
        """What a run with hyperparameters ``hp`` (resolved) needs of its engine: ``needs``, unless
        a hyperparameter changes it (e.g. EOPD's ``entropy: topk`` needs no full-vocabulary entropy)."""
        return cls.needs

    @classmethod
    def hparam_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": cls.schema, "additionalProperties": False}

    @classmethod
    def resolve_hparams(cls, overrides: dict[str, Any], where: tuple[str, ...] = ()) -> dict[str, Any]:
        """The defaults with ``overrides``; a key the method lacks or a value outside its
        schema raises ConfigError naming the config key (``where``: e.g. ("variants", name))."""
        from opdbench.config import first_schema_error

        unknown = sorted(set(overrides) - set(cls.defaults))
        if unknown:
            valid = ", ".join(sorted(cls.defaults)) or "(none)"
            at = f" (config key '{'.'.join((*where, unknown[0]))}')" if where else ""
            raise ConfigError(f"method '{cls.name}' has no hyperparameter '{unknown[0]}'{at}. Valid: {valid}")
        hp = {**cls.defaults, **overrides}
        message = first_schema_error(cls.hparam_schema(), hp, where or ("method", cls.name))
        if message:
            raise ConfigError(f"method '{cls.name}' hyperparameter: {message}")
        return hp

    # -- what to score -----------------------------------------------------------------
    @property
    def topk(self) -> int:
        """Teacher top-k size (methods that need ``teacher_topk`` set ``defaults['k']``)."""
        return int(self.hp.get("k", 0))

    @property
    def reference(self) -> str:
        """Frozen reference for ``ref_logprobs``: "student" = the initial student, or a
        model path / hub id (e.g. the teacher's pre-RL base for reward correction)."""
        return str(self.hp.get("reference", "student"))

    # -- hooks ------------------------------------------------------------------------
    def prepare(self, batch: ScoredBatch, progress: Progress) -> None:
        """Compute batch-level quantities (stored in ``batch.extras``) before the updates."""

    def prefix_lengths(self, n: int, max_new_tokens: int, progress: Progress,
                       generator: torch.Generator) -> list[int]:
        """Teacher-prefix length of each of ``n`` rollouts (need ``teacher_prefix``)."""
        raise NotImplementedError(f"method '{self.name}' needs teacher_prefix but has no prefix_lengths")

    def prompt_pool(self, correct_counts: dict[int, int], n_samples: int) -> list[int]:
        """Training prompt pool from the initial student's correct counts (need ``prompt_difficulty``)."""
        raise NotImplementedError(f"method '{self.name}' needs prompt_difficulty but has no prompt_pool")

    def difficulty_profile(self) -> dict[str, Any]:
        """How the engine profiles prompt difficulty: samples per prompt, how many prompts
        (None: all), and the sampling settings."""
        raise NotImplementedError(f"method '{self.name}' needs prompt_difficulty but has no difficulty_profile")

    def loss(self, mb: ScoredBatch, student: StudentOutput, progress: Progress
             ) -> tuple[list[LossTerm], dict[str, torch.Tensor]]:
        """The loss terms of a batch (the engine aggregates them; their masks must not depend
        on ``student``) and per-token diagnostics ({'credit': [B, T], ...})."""
        raise NotImplementedError

    # -- shared helpers ---------------------------------------------------------------
    def generator(self, progress: Progress) -> torch.Generator:
        """The method's own random stream at this step (Bernoulli masks, dropped rollouts):
        a function of (run seed, step), so a resumed run redraws exactly the same."""
        return torch.Generator().manual_seed(self.seed * 7_919 + progress.step)

    def term(self, per_token: torch.Tensor, mask: torch.Tensor, agg: str | None = None,
             weight: float = 1.0) -> LossTerm:
        """A loss term over ``mask``, aggregated with ``agg`` (default: the run's ``loss_agg_mode``)."""
        return LossTerm(per_token, mask, agg or self.train["loss_agg_mode"], weight)

    def clipped_pg(self, mb: ScoredBatch, student: StudentOutput, advantages: torch.Tensor
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-token PPO-clipped policy-gradient loss with the run's clip settings."""
        t = self.train
        return clipped_policy_loss(student.logS, mb.logOld, advantages.detach(), t["clip_ratio_low"],
                                   t["clip_ratio_high"], t.get("clip_ratio_c"))

    def policy_gradient(self, mb: ScoredBatch, student: StudentOutput, advantages: torch.Tensor,
                        mask: torch.Tensor | None = None) -> tuple[LossTerm, dict[str, torch.Tensor]]:
        """The PPO-clipped policy-gradient term over ``mask`` (default: all student-sampled
        response tokens), aggregated with the run's ``loss_agg_mode``."""
        per_token, stats = self.clipped_pg(mb, student, advantages)
        return self.term(per_token, mb.student_tokens if mask is None else mask), stats

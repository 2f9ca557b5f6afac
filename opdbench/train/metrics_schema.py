"""The per-step training metrics: every key of a ``metrics.jsonl`` row, its type, unit and
meaning. Every engine writes rows of these keys (the local one through
``opdbench.train.common``; another maps its own metrics onto them); the figures, the
paper tables and the tests read key names and titles from here, and a test checks a real
row against it.

A row has the keys of ``KEYS`` whose ``when`` holds at that step, and one
``<name>_mean`` per per-token diagnostic the method's ``loss`` returns (the diagnostic
averaged over the response tokens of the step's mini-batches); ``METHOD_DIAGNOSTICS``
names those of the built-in methods. A new method may return others: they are rows' keys
too, of type float.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opdbench.train.diagnostics import ENERGY_TAILS, HIST_EDGES, QUANTILES

EVERY_STEP = "every step"
CREDIT = "every step with a student-sampled token"


@dataclass(frozen=True)
class Key:
    name: str
    type: type  # the JSON value's Python type: int, float or list (of int)
    unit: str
    meaning: str
    when: str = EVERY_STEP  # when a row has it

    @property
    def title(self) -> str:
        """A figure panel's title: the meaning's first clause, with the unit."""
        head = self.meaning.split(";")[0].split(":")[0]
        return f"{head} ({self.unit})" if self.unit else head


def _keys(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


KEYS: dict[str, Key] = _keys(
    Key("step", int, "", "0-based training step"),
    Key("retention", float, "nats/token",
        "student log-prob of the fixed initial-student responses: REOPOLD Table 2's retention, before this step's "
        "update", "every retention_every steps and the last step, when retention_samples > 0"),
    # the update
    Key("loss", float, "", "loss of the optimizer steps of this step, mean over them"),
    Key("grad_norm", float, "", "gradient norm: before clipping, mean over the optimizer steps"),
    Key("lr", float, "", "learning rate after this step's optimizer steps"),
    # credit diagnostics of the rollout batch (opdbench.train.diagnostics), on R = logT - logOld
    *(Key(f"credit_p{int(q * 100):02d}", float, "nats", f"credit, {int(q * 100)} % quantile: the raw credit "
          f"R = logT - logOld of student-sampled tokens", CREDIT) for q in QUANTILES),
    Key("credit_hist", list, "tokens", f"histogram of the credit R: {len(HIST_EDGES) - 1} bins of 0.5 nats from "
        f"{HIST_EDGES[0]:g} to {HIST_EDGES[-1]:g}, values outside in the end bins", CREDIT),
    *(Key(f"energy_share_bottom{int(q * 100)}", float, "",
          f"update energy in the bottom {int(q * 100)} % of credits: the share of E = R^2 (1 - ||pi_S||^2) over the "
          "batch (REOPOLD Table 1)", CREDIT) for q in ENERGY_TAILS),
    # wall-clock seconds of the step's phases
    Key("seconds_generation", float, "s", "time in generation: rollouts, with the teacher's prefixes"),
    Key("seconds_student_scoring", float, "s", "time scoring the rollouts under the behaviour student"),
    Key("seconds_teacher", float, "s", "time scoring the rollouts under the teacher"),
    Key("seconds_reference_and_verifier", float, "s", "time in the reference model's scoring and the verifier"),
    Key("seconds_update", float, "s", "time in the update: the method's batch preparation and optimizer steps"),
    # the rollout batch
    Key("entropy", float, "nats/token", "student entropy: the behaviour student's over the response tokens"),
    Key("reverse_kl", float, "nats/token", "reverse KL to the teacher: mean of logOld - logT over the "
        "student-sampled tokens"),
    Key("response_length", float, "tokens", "response length: mean over the rollouts"),
    Key("teacher_token_fraction", float, "", "share of response tokens the teacher wrote",
        "methods that need teacher_prefix"),
    Key("train_accuracy", float, "", "verifier's accuracy on the rollouts", "methods that need outcome"),
)

# The per-token diagnostics of the built-in methods; a row holds ``<name>_mean`` for those
# its method returns.
METHOD_DIAGNOSTICS: dict[str, str] = {
    "credit": "the token credit R = logT - logOld (every method)",
    "clip_frac": "share of tokens where the PPO clip is active",
    "dual_clip_frac": "share of tokens where the dual clip caps the loss",
    "ratio": "importance ratio pi_S / pi_old",
    "fkl_token": "EOPD: share of tokens with teacher entropy >= tau (the forward-KL tokens)",
    "fkl": "EOPD: the top-k forward KL per token",
    "kept": "REOPOLD, Uni-OPD: share of tokens in the policy-gradient loss",
    "trust": "TrOPD: share of tokens in the trust region",
    "outlier_term": "TrOPD: the outlier objective per token",
    "advantage": "Uni-OPD: the calibrated advantage",
    "margin_shift": "Uni-OPD: the margin calibration's shift of its rollout's advantage",
}
DIAGNOSTIC_SUFFIX = "_mean"


def declared(name: str) -> Key | None:
    """The declaration of a row key: one of ``KEYS`` or a method diagnostic's mean."""
    if name in KEYS:
        return KEYS[name]
    base = name.removesuffix(DIAGNOSTIC_SUFFIX)
    if base != name and base in METHOD_DIAGNOSTICS:
        return Key(name, float, "", f"{METHOD_DIAGNOSTICS[base]}, mean over response tokens", "methods that return it")
    return None


def key(name: str) -> str:
    """``name``, checked to be declared: how readers name the keys they read."""
    if declared(name) is None:
        raise KeyError(f"'{name}' is not a declared metrics.jsonl key (opdbench.train.metrics_schema)")
    return name


def title(name: str) -> str:
    return declared(key(name)).title


def is_timing(name: str) -> bool:
    """Wall-clock keys: they differ between two runs that compute the same thing."""
    k = declared(name)
    return k is not None and k.unit == "s"


def without_timings(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not is_timing(k)}


def row_problems(row: dict[str, Any]) -> list[str]:
    """What is wrong with a metrics row: an undeclared key, a value of another type, or a
    key of every step missing."""
    problems = []
    for name, value in row.items():
        k = declared(name)
        if k is None:
            problems.append(f"undeclared key '{name}'")
        elif type(value) is not k.type or (k.type is list and not all(type(v) is int for v in value)):
            problems.append(f"'{name}' is {type(value).__name__}, declared {k.type.__name__}")
    problems += [f"'{k}' (every step) is missing" for k, d in KEYS.items() if d.when == EVERY_STEP and k not in row]
    return problems

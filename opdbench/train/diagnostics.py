"""Per-step diagnostics of the token credits, the same for every method (REOPOLD Fig. 1
and Table 1), computed on the raw credit ``R = logT - logOld`` of student-sampled tokens."""
from __future__ import annotations

import math

from opdbench.lazy import torch

from opdbench.method import ScoredBatch

# Credit histogram bins: 0.5 nats from -20 to 5; values outside fall into the end bins.
HIST_EDGES = [-20.0 + 0.5 * i for i in range(51)]
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
ENERGY_TAILS = (0.01, 0.05, 0.10)


def credit_histogram(credit: torch.Tensor) -> list[int]:
    edges = torch.tensor(HIST_EDGES, dtype=credit.dtype)
    clamped = credit.clamp(HIST_EDGES[0], HIST_EDGES[-1] - 1e-6)
    return torch.bucketize(clamped, edges, right=True).sub(1).bincount(minlength=len(HIST_EDGES) - 1).tolist()


def energy_shares(credit: torch.Tensor, sq_norm: torch.Tensor) -> dict[str, float]:
    """Share of the update energy ``E = R^2 (1 - ||pi_S||^2)`` held by the bottom 1/5/10 %
    of credits (REOPOLD Table 1: how much of the update the most negative tokens take)."""
    energy = credit.pow(2) * (1.0 - sq_norm)
    total = energy.sum().item()
    order = torch.argsort(credit)
    out = {}
    for q in ENERGY_TAILS:
        count = max(1, math.ceil(q * credit.numel()))
        out[f"energy_share_bottom{int(q * 100)}"] = energy[order[:count]].sum().item() / total if total > 0 else 0.0
    return out


def credit_diagnostics(batch: ScoredBatch) -> dict:
    tokens = batch.student_tokens.bool()
    credit = (batch.logT - batch.logOld)[tokens].float().cpu()
    if credit.numel() == 0:
        return {}
    out = {f"credit_p{int(q * 100):02d}": v for q, v in zip(QUANTILES, torch.quantile(credit, torch.tensor(QUANTILES)).tolist())}
    out["credit_hist"] = credit_histogram(credit)
    out.update(energy_shares(credit, batch.extras["sq_norm"][tokens].float().cpu()))
    return out

"""Token masks: which sampled tokens a method lets carry policy-gradient credit.

Every mask is a float tensor of 0/1 shaped like the credits; it is multiplied with the
response mask by the caller, so it never switches on a padding or prompt token.
"""
from __future__ import annotations

import math

from opdbench.lazy import torch


def floor_mask(credit: torch.Tensor, floor: float) -> torch.Tensor:
    """``1[R >= c]`` (REOPOLD Eq. 12, exploration phase)."""
    if not math.isfinite(floor):
        return torch.ones_like(credit)
    return (credit >= floor).to(credit.dtype)


def threshold_mask(credit: torch.Tensor, tau: float) -> torch.Tensor:
    """``1[R > tau]`` (TrOPD's Mask Outlier, a static threshold)."""
    return (credit > tau).to(credit.dtype)


def entropy_top_mask(entropy: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """``1[H >= tau_beta]`` with ``tau_beta`` the (1 - beta)-quantile of the entropies of the
    valid tokens of the whole batch (REOPOLD Eq. 13; "Entropy OPD 20%" with beta 0.2)."""
    values = entropy[valid.bool()].float()
    if values.numel() == 0:
        return torch.zeros_like(entropy)
    tau = torch.quantile(values, 1.0 - beta)
    return (entropy >= tau).to(entropy.dtype)


def outlier_gap_mask(logOld: torch.Tensor, logT: torch.Tensor, max_gap: float) -> torch.Tensor:
    """``1[|logOld - logT| < max_gap]``: drops tokens whose teacher/student log-ratio is
    beyond ``max_gap`` nats (Uni-OPD, 10)."""
    return ((logOld - logT).abs() < max_gap).to(logOld.dtype)


def trust_region_mask(credit: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``M ~ Bernoulli(min(pT/pS, 1)) = Bernoulli(min(exp(R), 1))`` per token (TrOPD Eq. 6),
    drawn with ``generator`` so a resumed run redraws the same mask. Returns (M, P_trust)."""
    p_trust = torch.exp(credit.clamp(max=0.0))
    u = torch.rand(credit.shape, generator=generator, device="cpu").to(credit.device)
    return (u < p_trust).to(credit.dtype), p_trust

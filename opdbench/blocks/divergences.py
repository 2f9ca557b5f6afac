"""Loss terms with a direct gradient (not through the importance ratio).

``topk_logT`` [B, T, k] are the teacher's log-probs at its top-k ids (full-vocabulary
normalisation); ``topk_logS`` the student's full-vocabulary log-probs at the same ids
(with gradient). Both come from the engine's O(n*k) scoring.
"""
from __future__ import annotations

import math

from opdbench.lazy import torch


def topk_forward_kl(topk_logT: torch.Tensor, topk_logS: torch.Tensor, renormalize: bool) -> torch.Tensor:
    """Per-token ``sum_{v in TopK_T} pT(v) * (log pT(v) - log pS(v))`` [B, T].

    ``renormalize=True`` uses the teacher renormalised over its top-k, ``pT~`` (EOPD);
    ``False`` uses the raw top-k probabilities (TrOPD Eq. 7). The student's log-probs are
    never renormalised.
    """
    topk_logT = topk_logT.detach()  # the teacher is a fixed target
    logT = torch.log_softmax(topk_logT, dim=-1) if renormalize else topk_logT
    pT = logT.exp()
    return (pT * (logT - topk_logS)).sum(-1)


def topk_jsd_forward_term(topk_logT: torch.Tensor, topk_logS: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * sum_{v in TopK_T} pT(v) log(pT(v) / pM(v))`` with ``pM = beta pT + (1-beta) pS``
    (TrOPD Eq. 4, its forward part), differentiable through pS."""
    topk_logT = topk_logT.detach()
    pT = topk_logT.exp()
    logM = torch.logaddexp(topk_logT + math.log(beta), topk_logS + math.log1p(-beta))
    return beta * (pT * (topk_logT - logM)).sum(-1)


def jsd_reverse_credit(logT: torch.Tensor, logOld: torch.Tensor, beta: float) -> torch.Tensor:
    """The sampled-token part of TrOPD Eq. 4 as a credit: ``-(1-beta) log(pS(x)/pM(x))``,
    detached (a reward, optimised through the policy gradient like R)."""
    logT, logOld = logT.detach(), logOld.detach()
    logM = torch.logaddexp(logT + math.log(beta), logOld + math.log1p(-beta))
    return (-(1.0 - beta) * (logOld - logM)).detach()


def off_policy_guidance(logT: torch.Tensor, logS: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * (logT - logS)`` on teacher-generated tokens: the K1 estimate of
    ``beta * KL(pT || pS)`` (TrOPD Eq. 8); its gradient is ``-beta * grad logS``."""
    return beta * (logT.detach() - logS)

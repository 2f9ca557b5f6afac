"""Loss terms with a direct gradient (not through the importance ratio).

``topk_logT`` [B, T, k] are the teacher's log-probs at its top-k ids (full-vocabulary
normalisation); ``topk_logS`` the student's full-vocabulary log-probs at the same ids
(with gradient). Both come from the engine's O(n*k) scoring.
"""
from __future__ import annotations

import math

from opdbench.lazy import torch


def topk_forward_kl(topk_logT: torch.Tensor, student, renormalize: bool) -> torch.Tensor:
    """Per-token ``sum_{v in TopK_T} pT(v) * (log pT(v) - log pS(v))`` [B, T].

    ``renormalize=True`` uses the teacher renormalised over its top-k, ``pT~`` (EOPD);
    ``False`` uses the raw top-k probabilities (TrOPD Eq. 7). The student's log-probs are
    never renormalised. ``student``: the ``StudentOutput`` (or its ``topk_logS`` [B, T, k]).
    Where the engine computed the raw sum in the student's forward (``student.topk_fkl``,
    verl), the renormalised one follows exactly: with m = sum_k pT,
    sum pT/m (log pT - log m - log pS) = topk_fkl / m - log m.
    """
    topk_logT = topk_logT.detach()  # the teacher is a fixed target
    topk_logS = getattr(student, "topk_logS", student)
    if topk_logS is None:
        if student.topk_fkl is None:
            raise ValueError("the student output has neither topk_logS nor topk_fkl: the engine scored no top-k")
        if not renormalize:
            return student.topk_fkl
        mass = topk_logT.exp().sum(-1)
        return student.topk_fkl / mass - mass.log()
    logT = torch.log_softmax(topk_logT, dim=-1) if renormalize else topk_logT
    pT = logT.exp()
    return (pT * (logT - topk_logS)).sum(-1)


def topk_entropy_lower_bound(topk_logT: torch.Tensor) -> torch.Tensor:
    """A lower bound [B, T] of the teacher's full-vocabulary entropy from its top-k log-probs
    alone (what a vLLM-served teacher returns): the top-k's own terms plus the tail's mass
    1 - m, every tail token at most as likely as the k-th, so its ``-p log p >= -p log p_k``:
    ``H >= -sum_k pT log pT - (1 - m) log p_k`` (equality when the tail is k-th-sized tokens).
    A gate ``H >= tau`` on it fires only where the full entropy's gate fires."""
    topk_logT = topk_logT.detach()
    pT = topk_logT.exp()
    tail = (1.0 - pT.sum(-1)).clamp(min=0.0)
    return -(pT * topk_logT).sum(-1) - tail * topk_logT.min(-1).values


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

"""Operations over the G rollouts of each prompt, using the verifier's outcome (Uni-OPD).

``group`` [B] is each rollout's prompt index, ``correct`` [B] its 0/1 outcome. Groups that
are all correct or all wrong are left as they are.
"""
from __future__ import annotations

from opdbench.lazy import torch

MARGIN_MODES = ("spread", "lift", "minmax")


def _mixed_groups(group: torch.Tensor, correct: torch.Tensor):
    for g in torch.unique(group).tolist():
        members = group == g
        pos, neg = members & (correct > 0.5), members & (correct <= 0.5)
        if pos.any() and neg.any():
            yield pos, neg


def margin_calibration(advantages: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, correct: torch.Tensor,
                       delta: float, mode: str = "spread") -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome-guided margin calibration. ``G_i`` = mean token advantage of rollout i; per
    mixed group the margin is ``mean_correct G - mean_incorrect G`` ("spread", "lift") or
    ``min_correct G - max_incorrect G`` ("minmax"). If it is below ``delta`` by ``d``:
    spread and minmax add ``+d/2`` to every token of correct rollouts and ``-d/2`` to
    incorrect ones; lift adds ``+d`` to correct rollouts only.
    Returns the calibrated advantages and the per-rollout shift [B]."""
    if mode not in MARGIN_MODES:
        raise ValueError(f"unknown margin mode '{mode}'; valid: {', '.join(MARGIN_MODES)}")
    m = mask.to(advantages.dtype)
    seq_mean = (advantages * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    shift = torch.zeros_like(seq_mean)
    for pos, neg in _mixed_groups(group, correct):
        if mode == "minmax":
            margin = seq_mean[pos].min() - seq_mean[neg].max()
        else:
            margin = seq_mean[pos].mean() - seq_mean[neg].mean()
        d = (delta - margin).item()
        if d <= 0:
            continue
        if mode == "lift":
            shift[pos] += d
        else:
            shift[pos] += d / 2
            shift[neg] -= d / 2
    return (advantages + shift[:, None]).detach(), shift


def correctness_balance(group: torch.Tensor, correct: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Online correctness balance: in each mixed group, drop random rollouts of the
    majority class until correct:incorrect is 1:1. Returns a [B] keep mask (0 = dropped)."""
    keep = torch.ones(group.shape[0], dtype=torch.float32)
    for pos, neg in _mixed_groups(group.cpu(), correct.cpu()):
        pos_idx, neg_idx = pos.nonzero().squeeze(-1), neg.nonzero().squeeze(-1)
        major, minor = (pos_idx, neg_idx) if len(pos_idx) > len(neg_idx) else (neg_idx, pos_idx)
        excess = len(major) - len(minor)
        if excess:
            drop = major[torch.randperm(len(major), generator=generator)[:excess]]
            keep[drop] = 0.0
    return keep.to(group.device)

"""The policy-gradient term and loss aggregation, as in verl's ``core_algos``."""
from __future__ import annotations

from opdbench.lazy import torch

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce per-token values [B, T] over the tokens where ``mask`` is 1.

    token-mean: sum over all tokens / number of tokens (the unified default);
    seq-mean-token-mean: mean over sequences of each sequence's token mean;
    seq-mean-token-sum: mean over sequences of each sequence's token sum;
    token-sum: plain sum (the OPD reference recipe's sum over tokens).
    """
    from opdbench.train.losses import LossTerm, batch_loss  # the one aggregation (engines use it per piece)

    return batch_loss([LossTerm(values, mask, mode)])


def clipped_policy_loss(
    logS: torch.Tensor,
    logOld: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO-clip loss ``-min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A)``.

    With ``dual_clip`` c > 1 (Ye et al. 2020), the loss of tokens with A < 0 is also
    capped at ``-c*A``. ``advantages`` must be detached; the gradient reaches the student
    only through ``rho = exp(logS - logOld)``. Returns the per-token loss and the per-token
    indicators of clipping (for metrics).
    """
    log_ratio = (logS - logOld).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    clip_frac = (clipped > unclipped).float()
    dual_frac = torch.zeros_like(loss)
    if dual_clip is not None:
        capped = torch.minimum(loss, -advantages * dual_clip)
        dual_frac = ((advantages < 0) & (loss > -advantages * dual_clip)).float()
        loss = torch.where(advantages < 0, capped, loss)
    return loss, {"clip_frac": clip_frac, "dual_clip_frac": dual_frac, "ratio": ratio.detach()}

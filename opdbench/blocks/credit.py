"""Token credits: what each sampled token is worth to the student (all detached)."""
from __future__ import annotations

import torch


def log_ratio_credit(logT: torch.Tensor, logOld: torch.Tensor) -> torch.Tensor:
    """``R = sg(logT - logOld)``: the reverse-KL K1 estimator per sampled token (REOPOLD Eq. 1)."""
    return (logT - logOld).detach()

"""Token credits: what each sampled token is worth to the student (all detached)."""
from __future__ import annotations

import math

from opdbench.lazy import torch


def log_ratio_credit(logT: torch.Tensor, logOld: torch.Tensor) -> torch.Tensor:
    """``R = sg(logT - logOld)``: the reverse-KL K1 estimator per sampled token (REOPOLD Eq. 1)."""
    return (logT - logOld).detach()


def extrapolated_credit(logT: torch.Tensor, logRef: torch.Tensor, logOld: torch.Tensor, lam: float) -> torch.Tensor:
    """G-OPD's credit ``lam * (logT - logRef) - (logOld - logRef)``; ``lam = 1`` is OPD's R,
    ``lam > 1`` extrapolates the teacher's implicit reward beyond the teacher (ExOPD)."""
    return (lam * (logT - logRef) - (logOld - logRef)).detach()


def floor_value(lam: float) -> float:
    """REOPOLD's bound ``c = log(lam) / (1 - lam)`` (Eq. 10), the limit of the mixture-relaxed
    credit as the teacher's probability goes to 0; ``lam = 0`` gives no floor (-inf)."""
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"the credit-floor lambda must be in [0, 1), got {lam}")
    return -math.inf if lam == 0.0 else math.log(lam) / (1.0 - lam)


def credit_floor(credit: torch.Tensor, floor: float) -> torch.Tensor:
    """``max(R, c)``: bounded negative credit (REOPOLD Eq. 5; TrOPD's Clip Outlier)."""
    return credit.clamp(min=floor) if math.isfinite(floor) else credit

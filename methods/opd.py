"""Standard on-policy distillation (Lu et al. 2025, "On-Policy Distillation";
REOPOLD, Ko et al. 2026, Eq. 1).

The student samples, the teacher scores each sampled token, and the token's credit is
the per-token reverse-KL estimate ``R = sg(log pi_T - log pi_old)`` with discount 0:

    J = sum_{i,t} rho_{i,t} * R_{i,t} / sum_i |o_i|,   rho = pi_S / pi_old,   loss = -J

The reference recipe sums over tokens without clipping; the unified setting uses the
base config's PPO clip (eps 0.2) and token-mean aggregation.
"""
from opdbench.blocks import log_ratio_credit
from opdbench.method import Method
from opdbench.registry import register_method


@register_method
class OPD(Method):
    name = "opd"
    defaults = {}

    def loss(self, mb, student, progress):
        credit = log_ratio_credit(mb.logT, mb.logOld)
        pg, stats = self.policy_gradient(mb, student, advantages=credit)
        return [pg], {"credit": credit, **stats}

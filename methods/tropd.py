"""TrOPD: trust-region on-policy distillation (Xing et al. 2026; shared/seeds/004,
Eq. 4-9, Tables 1, 2 and 5, Section 5.1).

On student-sampled tokens (Eq. 5-7):
    M ~ Bernoulli(P_trust),  P_trust = min(pT(x)/pS(x), 1) = min(exp(R), 1)      (Eq. 6)
    trust tokens (M = 1):    policy gradient with credit R = sg(logT - logOld)    (K1 RKL)
    outliers     (M = 0):    sum_{v in TopK_T} pT(v) log(pT(v)/pS(v)), direct gradient (Eq. 7)
On teacher-prefix tokens (off-policy guidance, Eq. 8):
    beta * (logT - logS)     (K1 forward KL on teacher samples; gradient -beta grad logS)
Eq. 9 writes the trust term with 1[x ~ pi_T]; it is a typo for student tokens.

The teacher writes a prefix x[:l] of each rollout and the student continues x[l:]. The
maximum prefix length starts at the maximum training length and is cosine-annealed to 0
over training. Choice (not published): each rollout draws its own l uniformly from
{0, ..., L_max(step)}, so at every step a range of prefix lengths is trained on.

Variants of Tables 1 and 5 are switches: ``region`` adaptive (Eq. 6), threshold
(outliers = R <= tau, the static threshold of "Mask/Clip Outlier") or none (every student
token is an outlier: "FKL" alone, "JSD"); ``outlier`` fkl, mask (0), clip (max(R, tau) in
the policy gradient) or jsd (TrOPD Eq. 4 with ``jsd_beta``: beta * top-k KL(pT || pM) +
(1 - beta) * log(pS/pM) as a credit, pM = beta pT + (1 - beta) pS); ``guidance`` off drops
the teacher prefix. tau defaults to REOPOLD's floor log(0.3)/0.7 = -1.72: the paper takes
its static threshold "as Clip Outlier in REOPOLD".
"""
import math

from opdbench.lazy import torch

from opdbench.blocks import (credit_floor, floor_value, jsd_reverse_credit, log_ratio_credit, off_policy_guidance,
                             threshold_mask, topk_forward_kl, topk_jsd_forward_term, trust_region_mask)
from opdbench.method import Method
from opdbench.registry import register_method

REGIONS = ("adaptive", "threshold", "none")
OUTLIERS = ("fkl", "mask", "clip", "jsd")


@register_method
class TrOPD(Method):
    name = "tropd"
    needs = frozenset({"teacher_topk", "teacher_prefix"})
    defaults = {"k": 64, "beta": 0.001, "region": "adaptive", "outlier": "fkl", "tau": floor_value(0.3),
                "jsd_beta": 0.5, "guidance": True, "max_prefix_fraction": 1.0}
    schema = {"k": {"type": "integer", "minimum": 1}, "beta": {"type": "number", "minimum": 0},
              "region": {"enum": list(REGIONS)}, "outlier": {"enum": list(OUTLIERS)},
              "tau": {"type": "number", "maximum": 0}, "jsd_beta": {"type": "number", "minimum": 0, "maximum": 1},
              "guidance": {"type": "boolean"},
              "max_prefix_fraction": {"type": "number", "minimum": 0, "maximum": 1}}
    paper_settings = {"steps": 200, "lr": 5.0e-6, "lr_schedule": "constant", "prompts_per_step": 128,
                      "rollouts_per_prompt": 4, "max_new_tokens": 8096}

    @classmethod
    def needs_of(cls, hp):
        """No teacher prefixes without guidance; the JSD outlier reads the student's top-k log-probs."""
        needs = cls.needs if hp["guidance"] else cls.needs - {"teacher_prefix"}
        return needs | {"student_topk"} if hp["outlier"] == "jsd" else needs

    def max_prefix(self, max_new_tokens: int, progress) -> int:
        """Cosine annealing of the maximum prefix length from the full length to 0."""
        if not self.hp["guidance"]:
            return 0
        start = self.hp["max_prefix_fraction"] * max_new_tokens
        return int(round(start * 0.5 * (1.0 + math.cos(math.pi * progress.fraction))))

    def prefix_lengths(self, n, max_new_tokens, progress, generator):
        high = self.max_prefix(max_new_tokens, progress)
        return torch.randint(0, high + 1, (n,), generator=generator).tolist()

    def prepare(self, batch, progress):
        credit = log_ratio_credit(batch.logT, batch.logOld)
        if self.hp["region"] == "adaptive":
            trust, _ = trust_region_mask(credit, self.generator(progress))
        elif self.hp["region"] == "threshold":
            trust = threshold_mask(credit, self.hp["tau"])
        else:
            trust = torch.zeros_like(credit)
        batch.extras["trust"] = trust * batch.student_tokens

    def loss(self, mb, student, progress):
        credit = log_ratio_credit(mb.logT, mb.logOld)
        on_policy = mb.student_tokens
        trust = mb.extras["trust"]
        outlier = on_policy - trust
        kind = self.hp["outlier"]
        pg_credit, pg_tokens, direct = credit, trust, torch.zeros_like(credit)
        if kind == "fkl":
            direct = outlier * topk_forward_kl(mb.extras["topk_logT"], student, renormalize=False)
        elif kind == "clip":
            pg_credit = torch.where(trust.bool(), credit, credit_floor(credit, self.hp["tau"]))
            pg_tokens = on_policy
        elif kind == "jsd":
            b = self.hp["jsd_beta"]
            pg_credit = torch.where(trust.bool(), credit, jsd_reverse_credit(mb.logT, mb.logOld, b))
            pg_tokens = on_policy
            direct = outlier * topk_jsd_forward_term(mb.extras["topk_logT"], student.topk_logS, b)
        pg, stats = self.clipped_pg(mb, student, pg_credit)
        per_token = pg * pg_tokens + direct
        if "teacher_token" in mb.extras:
            per_token = per_token + mb.extras["teacher_token"] * off_policy_guidance(mb.logT, student.logS,
                                                                                      self.hp["beta"])
        return [self.term(per_token, mb.mask)], {"credit": credit, "trust": trust, "outlier_term": direct, **stats}

"""Entropy-aware on-policy distillation (EOPD; Jin et al. 2026, arXiv 2603.07079, official
verl fork as read in shared/METHODS.md).

OPD's sampled-token reverse KL everywhere, plus a top-k forward KL at the positions where
the teacher is uncertain (its entropy over the full vocabulary is at least tau):

    L = L_RKL + alpha * sum_t 1[H_T,t >= tau] * FKL_t / N_valid
    FKL_t = sum_{v in TopK_T} pT~(v) * (log pT~(v) - log pS(v))

L_RKL is the PPO-clipped policy gradient with advantage R = sg(logT - logOld) (the base
config's clip and aggregation); pT~ is the teacher renormalised over its top-k; log pS(v)
is the student's full-vocabulary log-softmax at those ids (not renormalised). The FKL
term has a direct gradient and is a token mean over all valid tokens (N_valid), as in
the official code. tau = infinity recovers OPD.

``entropy: topk`` gates on a lower bound of H_T from the teacher's top-k log-probs
(``topk_entropy_lower_bound``) instead of the full-vocabulary entropy: the approximation a
teacher served by vLLM allows (it returns top-k log-probs, never the full distribution), so
the gate fires only where the exact one would at rollout temperature 1 (the paper's; the
top-k log-probs are the teacher's at temperature 1 on both engines, the exact entropy is at the
rollout temperature). The verl engine needs it (docs/verl.md).
"""
import math

from opdbench.blocks import log_ratio_credit, topk_entropy_lower_bound, topk_forward_kl
from opdbench.method import Method
from opdbench.registry import register_method


@register_method
class EOPD(Method):
    name = "eopd"
    needs = frozenset({"teacher_topk", "teacher_entropy"})
    defaults = {"tau": 0.8, "alpha": 1.0, "k": 16, "entropy": "full"}  # paper: k 16 (the repo README says 32)
    schema = {"tau": {"type": "number", "minimum": 0}, "alpha": {"type": "number", "minimum": 0},
              "k": {"type": "integer", "minimum": 1}, "entropy": {"enum": ["full", "topk"]}}
    # what to set where an engine lacks a need (the registry's refusal names it)
    instead = {"teacher_entropy": ("entropy", "topk", "the gate on a lower bound of H_T from the teacher's top-k")}
    paper_settings = {"rollouts_per_prompt": 1, "prompts_per_step": 128, "mini_batch_size": 32, "lr": 3.0e-6,
                      "lr_schedule": "cosine", "max_new_tokens": 4096, "temperature": 1.0}

    @classmethod
    def needs_of(cls, hp):
        return cls.needs - {"teacher_entropy"} if hp["entropy"] == "topk" else cls.needs

    def loss(self, mb, student, progress):
        credit = log_ratio_credit(mb.logT, mb.logOld)
        rkl, stats = self.policy_gradient(mb, student, advantages=credit)
        tau = float(self.hp["tau"])
        entropy = (mb.extras["teacher_entropy"] if self.hp["entropy"] == "full"
                   else topk_entropy_lower_bound(mb.extras["topk_logT"]))
        uncertain = (entropy >= tau).float() if math.isfinite(tau) else mb.logT * 0.0
        fkl = topk_forward_kl(mb.extras["topk_logT"], student, renormalize=True)
        fkl_term = self.term(uncertain * fkl, mb.mask, "token-mean", weight=self.hp["alpha"])
        return [rkl, fkl_term], {"credit": credit, "fkl_token": uncertain, "fkl": fkl, **stats}

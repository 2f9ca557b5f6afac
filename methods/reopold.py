"""REOPOLD: relaxed on-policy distillation with selective credit allocation (Ko et al.
2026; shared/seeds/000, Eq. 4-13, Algorithm 1, Table 6).

    R_hat = max(sg(R), c),   c = log(lambda) / (1 - lambda)                  (Eq. 5, 10)
    M = 1[R >= c]             for step k <  T_switch   (exploration, Eq. 12)
    M = 1[H_S >= tau_beta]    for step k >= T_switch   (refinement,  Eq. 13)
    J = sum rho * R_hat * M / sum M                                           (Eq. 4)

tau_beta is the (1 - beta)-quantile of the student entropy over the valid tokens of the
whole rollout batch (Algorithm 1, line 16), so it is computed once per batch in
``prepare``. The three axes of Table 4 are switches, so its ablation rows (and "Entropy
OPD 20%", "REOPOLD 2Stage") are config variants: ``bounded_credit`` (1), ``entropy_selection``
(2), ``schedule`` (3). Without the schedule, the mask is the entropy mask from the first
step when (2) is on, and every token otherwise.

T_switch is given as a fraction of the total steps: the paper sets it to "approximately
1/3 of the total training steps" (App. D; Table 6's 100 of 300 for math 1.5B).
"""
from opdbench.blocks import credit_floor, entropy_top_mask, floor_mask, floor_value, log_ratio_credit
from opdbench.method import Method
from opdbench.registry import register_method


@register_method
class REOPOLD(Method):
    name = "reopold"
    defaults = {"lam": 0.3, "beta": 0.2, "t_switch": 1 / 3,
                "bounded_credit": True, "entropy_selection": True, "schedule": True}
    schema = {"lam": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},  # the floor log(lam)/(1-lam)
              "beta": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
              "t_switch": {"type": "number", "minimum": 0},  # past 1: exploration never ends
              "bounded_credit": {"type": "boolean"}, "entropy_selection": {"type": "boolean"},
              "schedule": {"type": "boolean"}}
    # mini_batch_size counts rollouts: App. D's mini-batch of 32 prompts x 8 rollouts (4 updates per step)
    paper_settings = {"rollouts_per_prompt": 8, "prompts_per_step": 128, "mini_batch_size": 256, "lr": 1.0e-5,
                      "lr_schedule": "constant", "steps": 300, "max_new_tokens": 8192, "temperature": 1.0}

    def exploring(self, progress) -> bool:
        return self.hp["schedule"] and progress.step < self.hp["t_switch"] * progress.total_steps

    def prepare(self, batch, progress):
        if self.hp["entropy_selection"] and not self.exploring(progress):
            batch.extras["entropy_mask"] = entropy_top_mask(batch.entropy, batch.student_tokens, self.hp["beta"])

    def loss(self, mb, student, progress):
        c = floor_value(self.hp["lam"])
        raw = log_ratio_credit(mb.logT, mb.logOld)
        credit = credit_floor(raw, c) if self.hp["bounded_credit"] else raw
        if self.exploring(progress):
            keep = floor_mask(raw, c)
        elif self.hp["entropy_selection"]:
            keep = mb.extras["entropy_mask"]
        else:
            keep = mb.logT.new_ones(mb.logT.shape)
        keep = keep * mb.student_tokens
        pg, stats = self.policy_gradient(mb, student, advantages=credit, mask=keep)
        return [pg], {"credit": credit, "kept": keep, **stats}

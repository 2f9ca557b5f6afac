"""ExOPD: generalized on-policy distillation with reward extrapolation (G-OPD; Yang et al.
2026, arXiv 2602.12125; official code as read in shared/METHODS.md).

OPD's credit is the teacher's implicit reward ``logT - logRef`` minus the student's KL
to a reference; G-OPD scales the reward by lambda:

    A = lambda * (logT - logRef) - (logOld - logRef) = lambda*logT + (1-lambda)*logRef - logOld

(detached), optimised with the PPO-clipped policy gradient. lambda = 1 is OPD exactly;
the paper's default is 1.25 (1.5 was unstable: reward hacking, longer outputs). The
reference is the student's initial checkpoint, frozen; for reward correction
(strong-to-weak) set ``reference`` to the teacher's pre-RL base model.
"""
from opdbench.blocks import extrapolated_credit
from opdbench.method import Method
from opdbench.registry import register_method


@register_method
class ExOPD(Method):
    name = "exopd"
    needs = frozenset({"ref_logprobs"})
    defaults = {"lam": 1.25, "reference": "student"}
    schema = {"lam": {"type": "number", "minimum": 0}, "reference": {"type": "string", "minLength": 1}}
    # Same-size setting (METHODS.md; official G-OPD scripts, verl 0.6.1): 1024 prompts x n = 1 per step
    # and a mini-batch of 1024 rollouts (one optimizer step per rollout batch), lr 1e-5 constant without
    # warmup, 16384 tokens at temperature 1.0 / top-p 1.0, 50 steps (strong-to-weak: 100), verl's
    # dual-clip constant 3.
    paper_settings = {"prompts_per_step": 1024, "rollouts_per_prompt": 1, "mini_batch_size": 1024, "ppo_epochs": 1,
                      "lr": 1.0e-5, "lr_schedule": "constant", "warmup_steps": 0, "max_new_tokens": 16384,
                      "temperature": 1.0, "top_p": 1.0, "steps": 50, "clip_ratio_c": 3.0}

    def loss(self, mb, student, progress):
        credit = extrapolated_credit(mb.logT, mb.extras["logRef"], mb.logOld, self.hp["lam"])
        pg, stats = self.policy_gradient(mb, student, advantages=credit)
        return [pg], {"credit": credit, **stats}

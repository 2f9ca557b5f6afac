"""Uni-OPD (arXiv 2605.03677; official code WenjinHou/Uni-OPD, as read in
shared/METHODS.md): OPD with outcome-guided margin calibration and two data balances.

- Base advantage ``A = R = sg(logT - logOld)``; tokens with ``|logOld - logT| >= 10`` are masked
  out of the policy-gradient loss (only there, as in the official code).
- Margin calibration (needs the verifier's outcome per rollout, G >= 2): ``G_i`` = mean
  token advantage of rollout i over all its response tokens, outliers included; in every prompt group with both correct and incorrect
  rollouts, if ``gap = mean_correct G - mean_incorrect G < delta`` then ``d = delta - gap``
  is split over the group: "spread" adds +d/2 to correct and -d/2 to incorrect rollouts
  (text, delta 0.4); "lift" adds +d to correct ones (multimodal, delta 0); "minmax" uses
  the margin ``min_correct G - max_incorrect G`` and spreads; "none" switches it off.
- Online correctness balance: in each mixed group, random majority-class rollouts are
  dropped (loss mask 0) until correct:incorrect = 1:1.
- Offline difficulty balance: before training the initial student samples 8 responses
  per prompt (T 1.0, top-p 0.95, top-k 50); prompts it solves 1..7 times are upsampled.
  The factor is not published: default 2 (each mid-difficulty prompt appears twice per
  epoch), the smallest factor that upsamples. ``difficulty_prompts`` profiles a random
  subset of that size (null: every prompt, the paper) and trains on that subset.
- Loss: PPO clip (paper eps 0.2 / 0.28) with seq-mean-token-mean aggregation (paper
  settings); calibration and balance act on whole groups, so they run once per rollout
  batch in ``prepare``.
"""
from opdbench.lazy import torch

from opdbench.blocks import (MARGIN_MODES, correctness_balance, difficulty_upsample, log_ratio_credit,
                             margin_calibration, outlier_gap_mask)
from opdbench.method import Method
from opdbench.registry import register_method


@register_method
class UniOPD(Method):
    name = "uniopd"
    needs = frozenset({"outcome", "prompt_difficulty"})
    defaults = {"delta": 0.4, "margin": "spread", "max_gap": 10.0, "online_balance": True,
                "offline_balance": True, "difficulty_samples": 8, "difficulty_prompts": None, "upsample": 2}
    schema = {"delta": {"type": "number", "minimum": 0}, "margin": {"enum": [*MARGIN_MODES, "none"]},
              "max_gap": {"type": "number", "exclusiveMinimum": 0},
              "online_balance": {"type": "boolean"}, "offline_balance": {"type": "boolean"},
              "difficulty_samples": {"type": "integer", "minimum": 2},
              "difficulty_prompts": {"type": ["integer", "null"], "minimum": 1},
              "upsample": {"type": "integer", "minimum": 1}}
    # Official scripts (exps/scripts/OPD/*): 64 prompts x 16 rollouts, global batch 64 x 16 = 1024
    # rollouts per optimizer step (one per rollout batch), Adam lr 1e-6 constant after 5 warmup
    # iterations, weight decay 0.1, betas (0.9, 0.98), 16384 tokens at temperature 1, clip 0.2 / 0.28;
    # 50 steps as the paper's training-dynamics figure (seed 002).
    paper_settings = {"prompts_per_step": 64, "rollouts_per_prompt": 16, "mini_batch_size": 1024, "steps": 50,
                      "lr": 1.0e-6, "lr_schedule": "constant_with_warmup", "warmup_steps": 5, "weight_decay": 0.1,
                      "adam_betas": [0.9, 0.98], "max_new_tokens": 16384, "temperature": 1.0,
                      "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "seq-mean-token-mean"}

    def difficulty_profile(self):
        return {"n_samples": self.hp["difficulty_samples"], "prompts": self.hp["difficulty_prompts"],
                "temperature": 1.0, "top_p": 0.95, "top_k": 50}

    def prompt_pool(self, correct_counts, n_samples):
        factor = self.hp["upsample"] if self.hp["offline_balance"] else 1
        return difficulty_upsample(correct_counts, n_samples, factor)

    def prepare(self, batch, progress):
        adv = log_ratio_credit(batch.logT, batch.logOld)
        outcome = batch.extras["outcome"]
        shift = torch.zeros_like(outcome)
        if self.hp["margin"] != "none":  # G_i over every response token (METHODS.md), before the outlier mask
            adv, shift = margin_calibration(adv, batch.student_tokens, batch.group, outcome, self.hp["delta"],
                                            self.hp["margin"])
        tokens = batch.student_tokens * outlier_gap_mask(batch.logOld, batch.logT, self.hp["max_gap"])
        keep = torch.ones_like(outcome)
        if self.hp["online_balance"]:
            keep = correctness_balance(batch.group, outcome, self.generator(progress))
        batch.extras.update(advantage=adv, loss_tokens=tokens * keep[:, None], margin_shift=shift)

    def loss(self, mb, student, progress):
        keep = mb.extras["loss_tokens"]
        pg, stats = self.policy_gradient(mb, student, advantages=mb.extras["advantage"], mask=keep)
        credit = log_ratio_credit(mb.logT, mb.logOld)
        shift = mb.extras["margin_shift"][:, None].expand_as(credit)
        return [pg], {"credit": credit, "advantage": mb.extras["advantage"], "kept": keep,
                      "margin_shift": shift, **stats}

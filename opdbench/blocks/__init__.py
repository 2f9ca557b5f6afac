"""Building blocks that method files compose (credits, masks, loss terms, group
operations, prompt samplers, aggregation). Each is a small pure function on tensors."""
from opdbench.blocks.credit import credit_floor, extrapolated_credit, floor_value, log_ratio_credit
from opdbench.blocks.divergences import (jsd_reverse_credit, off_policy_guidance, topk_entropy_lower_bound,
                                         topk_forward_kl, topk_jsd_forward_term)
from opdbench.blocks.group import MARGIN_MODES, correctness_balance, margin_calibration
from opdbench.blocks.masks import entropy_top_mask, floor_mask, outlier_gap_mask, threshold_mask, trust_region_mask
from opdbench.blocks.policy import AGG_MODES, aggregate, clipped_policy_loss
from opdbench.blocks.prompts import difficulty_upsample

__all__ = [
    "AGG_MODES", "MARGIN_MODES", "aggregate", "clipped_policy_loss", "correctness_balance", "credit_floor",
    "difficulty_upsample", "entropy_top_mask", "extrapolated_credit", "floor_mask", "floor_value",
    "jsd_reverse_credit", "log_ratio_credit", "margin_calibration", "off_policy_guidance", "outlier_gap_mask",
    "threshold_mask", "topk_entropy_lower_bound", "topk_forward_kl", "topk_jsd_forward_term", "trust_region_mask",
]

"""Building blocks that method files compose (credits, masks, loss terms, aggregation)."""
from opdbench.blocks.credit import log_ratio_credit
from opdbench.blocks.policy import AGG_MODES, aggregate, clipped_policy_loss

__all__ = ["AGG_MODES", "aggregate", "clipped_policy_loss", "log_ratio_credit"]

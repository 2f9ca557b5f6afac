"""Supervised fine-tuning on worked solutions: how the tiny teacher and student are made.

One mechanism for every task: the task supplies prompts (``messages``) and the target
text (``solution``); the loss is the mean token NLL of the target and its eos.
"""
from __future__ import annotations

import random
import time
from typing import Any

from opdbench.lazy import torch
from tqdm import tqdm

from opdbench.train.rollout import encode_prompts, pack, response_logits, token_logprobs


def sft_loss(model, seqs) -> torch.Tensor:
    logp = token_logprobs(response_logits(model, seqs), seqs.responses)
    return -(logp * seqs.response_mask).sum() / seqs.response_mask.sum()


def train_sft(model, tokenizer, task, rows: list[dict[str, Any]], cfg: dict[str, Any], seed: int,
              log=print, desc: str = "sft") -> list[dict[str, float]]:
    """cfg: steps, batch_size, lr, warmup_steps, weight_decay. Returns the loss curve."""
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    rng = random.Random(seed)
    prompts = encode_prompts(tokenizer, task, rows)
    targets = [tokenizer(r["solution"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
               for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0),
                            betas=(0.9, 0.95))
    sched = get_cosine_schedule_with_warmup(opt, cfg.get("warmup_steps", 0), cfg["steps"])
    model.train()
    curve, t0, order = [], time.time(), []
    bar = tqdm(range(cfg["steps"]), desc=desc, mininterval=5)
    for step in bar:
        if len(order) < cfg["batch_size"]:
            order += rng.sample(range(len(rows)), len(rows))  # epochs without replacement
        idx, order = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
        seqs = pack([prompts[i] for i in idx], [targets[i] for i in idx], tokenizer.pad_token_id)
        loss = sft_loss(model, seqs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            curve.append({"step": step, "loss": loss.item(), "seconds": time.time() - t0})
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return curve

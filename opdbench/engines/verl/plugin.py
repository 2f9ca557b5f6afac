"""The suite's methods as verl distillation losses, loaded in every verl process through this
package's ``verl.plugins`` entry point (pyproject.toml): ``import verl`` imports this module, which
registers ``opdbench_<method>`` for every method file with
``verl.trainer.distillation.losses.register_distillation_loss``.

verl calls a registered loss as ``fn(config, distillation_config, model_output, data)`` on one
micro-batch and expects per-token losses [B, R] back, which it aggregates with
``actor.loss_agg_mode`` over the global batch (``agg_loss``) and backpropagates
(``use_policy_gradient: false``, ``overrides.py``). The run (method, hyperparameters, seed) reaches
the Ray workers as the JSON file named by ``OPDBENCH_VERL_RUN`` (``launch.py`` forwards it).

verl swallows an exception raised while a plugin loads (it logs it at debug level), so this module
only registers; a bad run file fails in the loss, naming the variable.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from opdbench.engines.verl.overrides import loss_name

RUN_ENV = "OPDBENCH_VERL_RUN"  # the run file (launch.write_run_file) of the run being trained
METHODS_ENV = "OPDBENCH_METHODS_DIR"  # where the method files are (default: the checkout's methods/)
DEFAULT_METHODS_DIR = Path(__file__).resolve().parents[3] / "methods"


def methods_dir() -> Path:
    return Path(os.environ.get(METHODS_ENV) or DEFAULT_METHODS_DIR)


@functools.lru_cache(maxsize=None)
def run_method(name: str):
    """The Method instance of the run being trained (one per process), checked against ``name``."""
    from opdbench.registry import get_method_class

    path = os.environ.get(RUN_ENV)
    if not path:
        raise RuntimeError(f"verl loss '{loss_name(name)}': {RUN_ENV} is not set in this process; launch the run "
                           f"with its script (opdbench.engines.verl.launch), which forwards it to Ray's workers")
    run = json.loads(Path(path).read_text())["run"]
    if run["method"] != name:
        raise RuntimeError(f"verl loss '{loss_name(name)}' called for a run of method '{run['method']}' ({path})")
    return get_method_class(name, methods_dir())(run["hparams"], run["train"], run["seed"])


def suite_batch(model_output: dict[str, Any], data) -> dict[str, Any]:
    """The per-token tensors of one verl micro-batch, padded to [B, R] as the suite's batches are:
    the current student's log-probs (with gradient), the rollout policy's, the teacher's (its
    sampled-token mode: one log-prob per position), the response mask, and the rollout group ids."""
    from verl.workers.utils.padding import no_padding_2_padding

    def padded(tensor, fill=0.0):
        return tensor.to_padded_tensor(fill) if tensor.is_nested else tensor

    mask = data["response_mask"]
    mask = (mask.to_padded_tensor(False) if mask.is_nested else mask).float()
    out = {"logS": no_padding_2_padding(model_output["log_probs"], data),
           "logOld": padded(data["old_log_probs"]),
           "logT": no_padding_2_padding(data["teacher_logprobs"], data).squeeze(-1),
           "mask": mask}
    if "entropy" in model_output:  # the current student's (actor.calculate_entropy), no gradient
        out["entropy"] = no_padding_2_padding(model_output["entropy"], data).detach()
    shapes = {key: tuple(value.shape) for key, value in out.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"verl's micro-batch tensors disagree in shape: {shapes}")
    uids = data.get("uid", None) if hasattr(data, "get") else None
    ids = {uid: i for i, uid in enumerate(dict.fromkeys(uids))} if uids is not None else None
    out["group"] = [ids[uid] for uid in uids] if ids is not None else list(range(mask.shape[0]))
    return out


def register_losses(directory: Path | None = None) -> list[str]:
    """Register one verl distillation loss per method file; return the names registered now."""
    from verl.trainer.distillation.losses import (DISTILLATION_LOSS_REGISTRY, DistillationLossSettings,
                                                  register_distillation_loss)

    from opdbench.registry import load_methods

    names = []
    for method in sorted(load_methods(directory or methods_dir())):
        name = loss_name(method)
        if name in DISTILLATION_LOSS_REGISTRY:  # imported twice in one process
            continue
        # use_estimator: the teacher is asked for the sampled token's log-prob (one mode per run in
        # verl 0.9.1; teacher_topk methods are refused by the engine's capabilities).
        register_distillation_loss(DistillationLossSettings(names=name, use_estimator=True))(
            functools.partial(method_loss, method))
        names.append(name)
    return names


def verl_per_token(terms, response_mask, data) -> "torch.Tensor":
    """The method's loss terms of one micro-batch as the per-token matrix [B, R] whose verl
    ``token-sum`` aggregation (``masked_sum(M, response_mask) * dp_size``, the mode the overrides
    set) is this micro-batch's share of ``sum_i weight_i * aggregate_i(term_i)`` over the global
    batch (opdbench/engines/losses.py): each term is divided by its normaliser over the global
    mini-batch, which verl counts for the response mask (``batch_num_tokens``, ``global_batch_size``).
    A term over another mask would need its own global count, which verl 0.9.1 does not provide."""
    import torch

    dp_size = float(data["dp_size"])
    tokens, seqs = float(data["batch_num_tokens"]), float(data["global_batch_size"])
    total = torch.zeros_like(response_mask, dtype=terms[0].per_token.dtype)
    for i, term in enumerate(terms):
        mask = term.mask.to(term.per_token.dtype)
        if not torch.equal(mask.bool(), response_mask.bool()):
            raise ValueError(f"loss term {i} ({term.agg}) counts over a mask other than verl's response mask; "
                             f"verl 0.9.1 gives global counts for the response mask only")
        values = term.per_token * mask
        if term.agg == "token-mean":
            values = values / tokens
        elif term.agg == "seq-mean-token-mean":
            values = values / mask.sum(-1, keepdim=True).clamp(min=1.0) / seqs
        elif term.agg == "seq-mean-token-sum":
            values = values / seqs
        elif term.agg != "token-sum":
            raise ValueError(f"loss term {i}: unknown aggregation '{term.agg}'")
        total = total + term.weight * values
    return total / dp_size


def method_loss(method: str, config, distillation_config, model_output, data):
    """verl's loss entry point for ``method``: verl's micro-batch as the suite's scored batch,
    ``Method.loss`` on it, its terms as per-token losses (``verl_per_token``) and the mean of
    each per-token diagnostic over the response tokens as a metric."""
    import torch

    from opdbench.method import Progress, ScoredBatch, StudentOutput
    from opdbench.rollout import Sequences

    m = suite_batch(model_output, data)
    mask = m["mask"]
    ids = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    # verl's micro-batch has no suite Sequences: the method's loss reads only its response mask.
    seqs = Sequences(ids, torch.ones_like(ids), torch.zeros_like(ids), ids, mask)
    entropy = m["entropy"] if "entropy" in m else torch.zeros_like(mask)
    batch = ScoredBatch(seqs, m["logOld"], m["logT"], entropy, torch.tensor(m["group"], device=mask.device), {})
    step = int(data["global_steps"]) - 1  # verl counts steps from 1
    total = int(json.loads(Path(os.environ[RUN_ENV]).read_text())["run"]["train"]["steps"])
    terms, diag = run_method(method).loss(batch, StudentOutput(logS=m["logS"]), Progress(step, total))
    if not isinstance(terms, list):
        raise TypeError(f"verl loss '{loss_name(method)}': Method.loss must return its per-token loss terms "
                        f"(issue 14's contract), not {type(terms).__name__}")
    metrics = {f"opdbench/{key}": ((value.detach() * mask).sum() / mask.sum().clamp(min=1)).item()
               for key, value in diag.items() if value.shape == mask.shape}
    return verl_per_token(terms, mask, data), metrics


try:  # verl imports this module through the entry point: register then; without verl, nothing to do
    import verl.trainer.distillation.losses  # noqa: F401
except ImportError:
    pass
else:
    register_losses()

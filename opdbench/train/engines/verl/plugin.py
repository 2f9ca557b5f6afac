"""The suite's methods as verl distillation losses, loaded in every verl process through this
package's ``verl.plugins`` entry point (pyproject.toml): ``import verl`` imports this module, which
registers ``opdbench_<method>`` for every method file with
``verl.trainer.distillation.losses.register_distillation_loss``.

verl calls a registered loss as ``fn(config, distillation_config, model_output, data)`` on one
micro-batch and expects per-token losses [B, R] back, which it sums (``agg_loss`` in
``token-sum``, times ``dp_size``) and backpropagates (``use_policy_gradient: false``,
``overrides.py``). The method's batch-level state and each loss term's normalisers over the global
mini-batch reach every micro-batch as extra batch keys (``prepare_update``). The run (method, hyperparameters, seed) reaches
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

from opdbench.train.engines.verl.launch import RUN_ENV, methods_dir
from opdbench.train.engines.verl.overrides import loss_name


def run_file() -> dict[str, Any]:
    """The run being trained (``launch.write_run_file``), named by ``OPDBENCH_VERL_RUN``."""
    path = os.environ.get(RUN_ENV)
    if not path:
        raise RuntimeError(f"{RUN_ENV} is not set in this process; launch the run with its script "
                           f"(opdbench.train.engines.verl.launch), which forwards it to Ray's workers")
    return json.loads(Path(path).read_text())["run"]


@functools.lru_cache(maxsize=None)
def run_method(name: str):
    """The Method instance of the run being trained (one per process), checked against ``name``."""
    from opdbench.registry import get_method_class

    run = run_file()
    if run["method"] != name:
        raise RuntimeError(f"method '{name}' (verl loss '{loss_name(name)}') asked for in a run of method "
                           f"'{run['method']}' ({os.environ[RUN_ENV]})")
    return get_method_class(name, methods_dir())(run["hparams"], run["train"], run["seed"])


NORM_TOKENS = "opdbench_norm_tokens"  # [B, n_terms]: each term's token count over the row's global mini-batch
NORM_SEQS = "opdbench_norm_seqs"  # [B, n_terms]: its count of sequences with a token there
ENTROPY = "opdbench_entropy"  # [B, R]: the rollout policy's entropy (verl's old-log-prob pass)
REFERENCE = "ref_log_prob"  # verl's own key: the reference worker's log-probs per response token
OUTCOME = "rm_scores"  # verl's reward per response token (TransferQueue field)
EXTRA = "opdbench_extra_"  # + name: Method.prepare's batch.extras, one row per rollout
# A top-k run (need teacher_topk): each rollout's teacher log-probs of its sampled tokens, as the
# agent-loop worker keeps them in its extra_fields (agent_loop.py; per position of the unpadded
# sequence), and as the trainer hands them to the loss ([B, R], per response token).
TOKEN_LOGPROBS = "opdbench_teacher_token_logprobs"
TEACHER_TOKEN = "opdbench_teacher_token"
# A run with teacher prefixes: each rollout's prefix length, as the prefix agent loop records it
PREFIX_LENGTH = "opdbench_teacher_prefix_length"
# extras scored_batch reads from verl's own keys in every micro-batch: never copied into extra keys
FROM_VERL = ("topk_logT", "topk_ids")


def minibatch_rows(n_rows: int, mini_batch_size: int, dp_size: int) -> list["torch.Tensor"]:
    """The rows of each global mini-batch (one optimizer step) as verl 0.9.1 forms them with
    ``actor.shuffle=False``: the dispatch gives rank r the r-th contiguous chunk of the batch, a rank
    splits its chunk into contiguous local mini-batches of ``mini_batch_size / dp_size`` rows
    (``tu.make_iterator``), and the j-th global mini-batch is the ranks' j-th local ones together."""
    import torch

    if n_rows % dp_size or mini_batch_size % dp_size or (n_rows // dp_size) % (mini_batch_size // dp_size):
        raise ValueError(f"{n_rows} rows do not split into mini-batches of {mini_batch_size} over {dp_size} ranks")
    chunk, local = n_rows // dp_size, mini_batch_size // dp_size
    return [torch.cat([torch.arange(r * chunk + j * local, r * chunk + (j + 1) * local) for r in range(dp_size)])
            for j in range(chunk // local)]


def prepare_update(method, batch, progress, minibatches) -> dict[str, "torch.Tensor"]:
    """What the loss of every micro-batch needs from the whole rollout batch, as per-row batch keys:
    ``Method.prepare`` on the whole batch (its extras), the rollout entropy, and each loss term's
    normalisers over the row's global mini-batch (``losses.normalisers``). Term masks are detached
    functions of the scored batch, so they are taken here from ``Method.loss`` without a gradient
    (the student's log-probs stand in as the rollout's)."""
    import torch

    from opdbench.train.losses import normalisers
    from opdbench.method import StudentOutput

    method.prepare(batch, progress)
    tokens = seqs = None
    with torch.no_grad():
        for rows in minibatches:
            mb = batch.select(rows)
            # (the top-k forward KL's value does not shape a mask: a zero stands in for verl's)
            fkl = torch.zeros_like(mb.logOld) if "topk_logT" in mb.extras else None
            terms, _ = method.loss(mb, StudentOutput(logS=mb.logOld, topk_fkl=fkl), progress)
            norms = normalisers([terms])
            if tokens is None:
                tokens = batch.logOld.new_zeros(batch.logOld.shape[0], len(norms))
                seqs = torch.zeros_like(tokens)
            tokens[rows] = torch.stack([n.tokens for n in norms]).to(tokens.dtype)
            seqs[rows] = torch.stack([n.seqs for n in norms]).to(seqs.dtype)
    keys = {NORM_TOKENS: tokens, NORM_SEQS: seqs, ENTROPY: batch.entropy,
            **{EXTRA + name: value for name, value in batch.extras.items() if name not in FROM_VERL}}
    if "topk_logT" in batch.extras:  # the teacher's sampled-token log-probs, beside verl's top-k ones
        keys[TEACHER_TOKEN] = batch.logT
    return keys


def _padded(tensor, width: int, fill=0.0):
    """A response-shaped tensor as [B, width] (or [B, width, k]): verl keeps some padded to
    max_response_len, others jagged (nested) per response."""
    import torch

    if getattr(tensor, "is_nested", False):
        return tensor.to_padded_tensor(fill, output_size=(tensor.size(0), width, *tensor.shape[2:]))
    pad = (0, 0) * (tensor.dim() - 2) + (0, max(0, width - tensor.shape[1]))
    return torch.nn.functional.pad(tensor[:, :width], pad, value=fill)


def _plain(values):
    """A non-tensor batch field as a list of Python values: TransferQueue hands a ``NonTensorStack``
    back whose items are (unhashable) ``NonTensorData``; a micro-batch may hold a numpy array."""
    if values is None:
        return None
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [getattr(v, "data", v) for v in values]


def scored_batch(data, width: int, entropy_key: str = ENTROPY):
    """verl's batch (a micro-batch in the loss, the rollout batch in the trainer) as the suite's
    ``ScoredBatch`` padded to [B, width]: the rollout policy's log-probs, the teacher's (its
    sampled-token mode: one log-prob per position of the unpadded sequence), the response mask,
    the rollout entropy, the rollout groups (verl's ``uid``), the reference's log-probs where verl's
    reference worker ran (``logRef``), and the extras ``prepare_update`` added. verl's batch has no
    suite ``Sequences``: the methods read only its response mask."""
    import torch
    from verl.workers.utils.padding import no_padding_2_padding

    from opdbench.method import ScoredBatch
    from opdbench.train.rollout import Sequences

    keys = list(data.keys())
    mask = _padded(data["response_mask"], width).float()
    teacher = no_padding_2_padding(data["teacher_logprobs"], data)
    extras = {}
    if TEACHER_TOKEN in keys:  # verl's top-k mode (overrides._topk): the trainer added the sampled tokens' log-probs
        teacher = teacher if teacher.dim() == 3 else teacher[..., None]
        extras["topk_logT"] = _padded(teacher, width).float() * mask[..., None]
        ids = no_padding_2_padding(data["teacher_ids"], data)
        extras["topk_ids"] = _padded(ids if ids.dim() == 3 else ids[..., None], width, fill=0).long()
        logT = _padded(data[TEACHER_TOKEN], width)
    else:
        logT = _padded(teacher.squeeze(-1) if teacher.dim() == 3 else teacher, width)
    entropy = _padded(data[entropy_key], width) if entropy_key in keys else torch.zeros_like(mask)
    extras.update({key[len(EXTRA):]: (_padded(data[key], width) if data[key].dim() == 2 else data[key])
                   for key in keys if isinstance(key, str) and key.startswith(EXTRA)})
    if REFERENCE in keys:  # ref_logprobs (ExOPD)
        extras["logRef"] = _padded(data[REFERENCE], width).float() * mask
    if OUTCOME in keys:  # the verifier's 0/1 per rollout, as verl's reward (reward.compute_score) wrote it (Uni-OPD)
        extras["outcome"] = (_padded(data[OUTCOME], width).sum(-1) > 0.5).float() * (mask.sum(-1) > 0)
    uids = _plain(data.get("uid", None) if hasattr(data, "get") else None)
    ids = {uid: i for i, uid in enumerate(dict.fromkeys(uids))} if uids is not None else None
    group = [ids[uid] for uid in uids] if ids is not None else list(range(mask.shape[0]))
    # verl's batch balancing pads with empty rows: each its own group, so no group statistic
    # (Uni-OPD's margins and correctness balance) counts them
    group = [g if mask[i].any() else len(group) + i for i, g in enumerate(group)]
    ids_ = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    seqs = Sequences(ids_, torch.ones_like(ids_), torch.zeros_like(ids_), ids_, mask)
    return ScoredBatch(seqs, _padded(data["old_log_probs"], width).float() * mask, logT.float() * mask,
                       entropy.float() * mask, torch.tensor(group, device=mask.device), extras)


def register_losses(directory: Path | None = None) -> list[str]:
    """Register one verl distillation loss per method file; return the names registered now."""
    from verl.trainer.distillation.losses import (DISTILLATION_LOSS_REGISTRY, DistillationLossSettings,
                                                  register_distillation_loss)

    from opdbench.registry import get_method_class, load_methods

    names = []
    for method in sorted(load_methods(directory or methods_dir())):
        name = loss_name(method)
        if name in DISTILLATION_LOSS_REGISTRY:  # imported twice in one process
            continue
        # use_estimator: the teacher is asked for the sampled token's log-prob; use_topk (need teacher_topk):
        # for its top-k, verl's forward computes the top-k forward KL, and agent_loop.py adds the sampled token's
        topk = "teacher_topk" in get_method_class(method, directory or methods_dir()).needs
        register_distillation_loss(DistillationLossSettings(names=name, use_topk=topk, use_estimator=not topk))(
            functools.partial(method_loss, method))
        names.append(name)
    return names


def global_normalisers(data, n_terms: int) -> list:
    """The normalisers ``prepare_update`` attached to the micro-batch's rows (all rows of a
    micro-batch belong to one global mini-batch, so they agree)."""
    from opdbench.train.losses import Normaliser

    keys = list(data.keys())
    if NORM_TOKENS not in keys or NORM_SEQS not in keys:
        raise RuntimeError(f"verl's micro-batch has no '{NORM_TOKENS}': the run's trainer must call "
                           f"opdbench.train.engines.verl.plugin.prepare_update on the rollout batch before the update")
    tokens, seqs = data[NORM_TOKENS], data[NORM_SEQS]
    if tokens.shape[-1] != n_terms:
        raise ValueError(f"the method gave {n_terms} loss terms here but {tokens.shape[-1]} when its "
                         f"normalisers were counted over the mini-batch")
    if not (_same_rows(tokens) and _same_rows(seqs)):
        raise ValueError("a micro-batch mixes rows of different mini-batches (verl's actor.shuffle must be False)")
    return [Normaliser(tokens[0, i], seqs[0, i]) for i in range(n_terms)]


def _same_rows(t) -> bool:
    return bool((t == t[:1]).all())


def verl_per_token(terms, norms) -> "torch.Tensor":
    """The method's loss terms of one micro-batch as the per-token matrix [B, R] whose sum over the
    response tokens is the micro-batch's share of the mini-batch loss, ``aggregate_terms(terms,
    norms)`` (opdbench/train/losses.py; term masks lie inside the response mask). verl's
    ``token-sum`` ``agg_loss`` (the mode the overrides set) sums it and multiplies by ``dp_size``,
    which undoes FSDP's averaging of gradients over ranks: the update is the mini-batch loss's."""
    from opdbench.train.losses import per_token_share

    total = None
    for term, norm in zip(terms, norms, strict=True):
        values = term.weight * per_token_share(term, norm)
        total = values if total is None else total + values
    return total


def method_loss(method: str, config, distillation_config, model_output, data):
    """verl's loss entry point for ``method``: verl's micro-batch as the suite's scored batch,
    the same ``Method.loss`` the local engine calls, its terms with the mini-batch's normalisers as
    per-token losses (``verl_per_token``), and the mean of each per-token diagnostic over the
    response tokens as a metric."""
    from verl.workers.utils.padding import no_padding_2_padding

    from opdbench.method import Progress, StudentOutput

    logS = no_padding_2_padding(model_output["log_probs"], data)  # the current student, with gradient
    batch = scored_batch(data, logS.shape[1])
    mask = batch.mask
    # a top-k run: verl's forward computed sum_k pT (log pT - log pS) at each position, with gradient
    fkl = model_output.get("distillation_losses")
    student = StudentOutput(logS=logS, topk_fkl=None if fkl is None else _padded(no_padding_2_padding(fkl, data),
                                                                                  logS.shape[1]))
    step = int(data["global_steps"]) - 1  # verl counts steps from 1
    terms, diag = run_method(method).loss(batch, student, Progress(step, run_file()["train"]["steps"]))
    if not isinstance(terms, list):
        raise TypeError(f"verl loss '{loss_name(method)}': Method.loss must return its loss terms "
                        f"(opdbench.train.losses.LossTerm), not {type(terms).__name__}")
    per_token = verl_per_token(terms, global_normalisers(data, len(terms)))
    metrics = {f"opdbench/{key}": ((value.detach() * mask).sum() / mask.sum().clamp(min=1)).item()
               for key, value in diag.items() if value.shape == mask.shape}
    return per_token, metrics


try:  # verl imports this module through the entry point: register then; without verl, nothing to do
    import verl.trainer.distillation.losses  # noqa: F401
except ImportError:
    pass
else:
    register_losses()
    from opdbench.train.engines.verl import trainer

    trainer.register()

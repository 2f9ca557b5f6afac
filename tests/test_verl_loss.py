"""verl's loss entry point against the local engine: for every method verl can run (its needs within
VerlEngine.capabilities), with its variants and every loss_agg_mode, verl's distillation loss on a
hand-built fp32 batch split over 2 data-parallel ranks and single-row micro-batches gives the local
engine's mini-batch loss and gradient (opdbench.train.losses.batch_loss), the method's batch
preparation and the terms' normalisers coming from the registered trainer's ``update_keys`` on
verl's whole batch."""
from types import SimpleNamespace

import pytest
import torch

from conftest import METHODS_DIR, REPO
from opdbench.blocks.policy import AGG_MODES
from opdbench.config import load_yaml, resolve_run
from opdbench.train.losses import batch_loss
from opdbench.train.engines.verl import launch, plugin, trainer
from opdbench.train.engines.verl.engine import VerlEngine
from opdbench.train.engines.verl.overrides import loss_name
from opdbench.method import Progress, ScoredBatch, StudentOutput
from opdbench.registry import get_method_class, load_methods
from opdbench.train.rollout import Sequences

TINY = load_yaml(REPO / "config" / "config.yaml")
B, R, PROMPT, DP, MINI = 8, 6, 3, 2, 4  # rows, response width, prompt length, ranks, rows per mini-batch
LENGTHS = [6, 3, 5, 1, 4, 6, 2, 5]
OUTCOME = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # groups (pairs): mixed, all right, mixed, all wrong
# REOPOLD's ablation switches (Table 4), each at an exploring step (0) and a refining one (7 of 10).
REOPOLD_VARIANTS = [{}, {"bounded_credit": False}, {"entropy_selection": False}, {"schedule": False},
                    {"schedule": False, "entropy_selection": False}]


def verl_methods():
    """The methods verl runs in its sampled-token mode (top-k ones: tests/test_verl_topk.py)."""
    return sorted(name for name, cls in load_methods(METHODS_DIR).items()
                  if cls.needs <= VerlEngine.capabilities and "teacher_topk" not in cls.needs)


def cases():
    for method in verl_methods():
        for hp in (REOPOLD_VARIANTS if method == "reopold" else [{}]):
            for step in (0, 7):
                for mode in AGG_MODES:
                    yield pytest.param(method, hp, step, mode, id=f"{method}-{hp}-step{step}-{mode}")


def batch_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(R)[None] < torch.tensor(LENGTHS)[:, None]).float()
    logOld = -2 * torch.rand(B, R, generator=g) * mask
    logT = (logOld + 0.8 * torch.randn(B, R, generator=g)).clamp(max=0) * mask
    entropy = 2 * torch.rand(B, R, generator=g) * mask
    logS = (logOld + 0.3 * torch.randn(B, R, generator=g)) * mask  # ratios off 1: the clip acts
    return mask, logOld, logT, entropy, logS


def reference(mask, logOld):
    """The reference model's log-probs (ExOPD): near the rollout policy's, as the initial student's."""
    g = torch.Generator().manual_seed(1)
    return (logOld + 0.5 * torch.randn(B, R, generator=g)).clamp(max=0) * mask


def scored(mask, logOld, logT, entropy):
    ids = torch.zeros(B, R, dtype=torch.long)
    return ScoredBatch(Sequences(ids, torch.ones_like(ids), torch.zeros_like(ids), ids, mask), logOld.clone(),
                       logT.clone(), entropy.clone(), torch.arange(B) // 2,
                       {"logRef": reference(mask, logOld), "outcome": OUTCOME.clone()})


def rm_scores(mask):
    """verl's reward per response token (Uni-OPD's outcome): the verifier's 0/1 on each response's last token."""
    last = mask * (mask.cumsum(-1) == mask.sum(-1, keepdim=True))
    return last * OUTCOME[:, None]


def micro_batch(rows, logS, logOld, logT, mask, keys, step, info):
    """verl's no-padding micro-batch (rows of one rank's local mini-batch): jagged prompt+response
    sequences whose model output at position p + t - 1 is response token t's log-prob; the
    response-shaped keys padded to max_response_len, as left_right_2_no_padding leaves them."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    lens = [LENGTHS[i] for i in rows]
    out, teacher = [], []
    for i, n in zip(rows, lens):
        pad = torch.zeros(PROMPT - 1)
        out += [pad, logS[i, :n], torch.zeros(1)]
        teacher += [pad, logT[i, :n], torch.zeros(1)]
    offsets = torch.tensor([0] + [PROMPT + n for n in lens]).cumsum(0)
    jag = lambda values: torch.nested.nested_tensor_from_jagged(values, offsets=offsets)  # noqa: E731
    data = TensorDict({
        "prompts": torch.nested.nested_tensor([torch.ones(PROMPT, dtype=torch.long)] * len(rows), layout=torch.jagged),
        "responses": torch.nested.nested_tensor([torch.ones(n, dtype=torch.long) for n in lens], layout=torch.jagged),
        "response_mask": mask[rows], "old_log_probs": logOld[rows], "ref_log_prob": reference(mask, logOld)[rows],
        "teacher_logprobs": jag(torch.cat(teacher)[:, None]),
        **{key: value[rows] for key, value in keys.items()}}, batch_size=[len(rows)])
    tu.assign_non_tensor(data, max_response_len=R, global_steps=step + 1, **info)
    tu.assign_non_tensor_stack(data, "uid", [f"prompt{i // 2}" for i in rows])  # verl's rollout groups: pairs
    return {"log_probs": torch.cat(out)}, data


@pytest.mark.parametrize("method,hp,step,mode", list(cases()))
def test_verls_loss_entry_point_gives_the_local_engines_loss_and_gradient(tmp_path, monkeypatch, method, hp, step,
                                                                            mode):
    import verl  # noqa: F401  (the verl.plugins entry point registers the methods' losses)
    from verl.trainer.distillation.losses import distillation_loss
    from verl.workers.config import DistillationConfig, DistillationLossConfig

    config = {**TINY, "base": {**TINY["base"], "loss_agg_mode": mode, "steps": 10}}
    run = resolve_run(config, "math", method, 0, METHODS_DIR)
    run["hparams"].update(hp)
    cls = get_method_class(method, METHODS_DIR)
    progress = Progress(step, 10)
    monkeypatch.setenv(plugin.RUN_ENV, str(launch.write_run_file(run, tmp_path)))
    plugin.run_method.cache_clear()
    mask, logOld, logT, entropy, base = batch_data()
    minibatches = plugin.minibatch_rows(B, MINI, DP)

    # the local engine: prepare on the whole batch, each mini-batch's loss taken whole
    local = cls(run["hparams"], run["train"], 0)
    batch = scored(mask, logOld, logT, entropy)
    local.prepare(batch, progress)
    # verl: the registered trainer's preparation on verl's whole batch, then each rank's micro-batches
    # through verl's distillation loss
    _, fields = micro_batch(list(range(B)), base, logOld, logT, mask, {"entropy": entropy, "rm_scores": rm_scores(mask)},
                            step, {})
    keys = trainer.update_keys(fields, cls(run["hparams"], run["train"], 0), progress, MINI, DP)
    settings = DistillationConfig(distillation_loss=DistillationLossConfig(  # as overrides.py sets them
        loss_mode=loss_name(method), use_task_rewards=False, use_policy_gradient=False, loss_max_clamp=None,
        log_prob_min_clamp=None))
    actor = SimpleNamespace(loss_agg_mode="token-sum", global_batch_info={}, loss_scale_factor=None)  # overrides.py
    for rows in minibatches:
        theta = torch.zeros(B, R, requires_grad=True)
        terms, _ = local.loss(batch.select(rows), StudentOutput(logS=(base + theta)[rows]), progress)
        expected = batch_loss(terms)
        (expected_grad,) = torch.autograd.grad(expected, theta)

        theta = torch.zeros(B, R, requires_grad=True)
        logS = base + theta
        info = {"dp_size": DP, "batch_num_tokens": mask[rows].sum().item(), "global_batch_size": MINI}
        total = 0.0
        for rank_rows in rows.chunk(DP):  # each rank's local mini-batch, one row per micro-batch
            for row in rank_rows:
                model_output, data = micro_batch([int(row)], logS, logOld, logT, mask, keys, step, info)
                loss, _ = distillation_loss(actor, settings, model_output, data)
                total = total + loss
        check_ranks(total, theta, expected, expected_grad)


def check_ranks(total, theta, expected, expected_grad):
    """The ranks' summed micro-batch losses, averaged as FSDP averages their gradients, equal the local
    engine's mini-batch loss and its gradient (w.r.t. ``theta``, the student's perturbation)."""
    total = total / DP  # FSDP averages the ranks' gradients
    (grad,) = torch.autograd.grad(total, theta)
    assert torch.allclose(total, expected, rtol=1e-5, atol=1e-6), (total.item(), expected.item())
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert expected_grad.abs().sum() > 0


def test_the_mini_batches_are_the_rows_verls_iterator_gives_each_rank():
    """The dispatch hands rank r the r-th contiguous chunk; verl's own make_iterator (shuffle off, as
    overrides.py sets it) splits it; global mini-batch j is every rank's j-th."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    n, mini, dp, epochs = 16, 8, 2, 2
    batch = TensorDict({"row": torch.arange(n)}, batch_size=[n])
    per_rank = [[mb["row"].tolist() for mb in tu.make_iterator(chunk, mini // dp, epochs, seed=1 + rank,
                                                                dataloader_kwargs={"shuffle": False})]
                for rank, chunk in enumerate(batch.chunk(dp))]
    expected = [sorted(sum((rows[j] for rows in per_rank), [])) for j in range(len(per_rank[0]))]
    rows = [r.tolist() for r in plugin.minibatch_rows(n, mini, dp)]
    assert expected == rows * epochs
    with pytest.raises(ValueError, match="do not split"):
        plugin.minibatch_rows(8, 3, 2)


def test_reopold_keeps_tokens_other_than_the_response_mask_so_per_term_counts_matter():
    """The case verl's own batch_num_tokens gets wrong: REOPOLD's kept tokens are a strict subset."""
    run = resolve_run(TINY, "math", "reopold", 0, METHODS_DIR)
    cls = get_method_class("reopold", METHODS_DIR)
    mask, logOld, logT, entropy, _ = batch_data()
    keys = plugin.prepare_update(cls(run["hparams"], run["train"], 0), scored(mask, logOld, logT, entropy),
                                 Progress(7, 10), plugin.minibatch_rows(B, MINI, DP))
    assert (keys[plugin.NORM_TOKENS][:, 0] < mask.sum()).all()
    assert plugin.EXTRA + "entropy_mask" in keys


def test_a_micro_batch_without_the_normalisers_is_refused():
    from tensordict import TensorDict

    with pytest.raises(RuntimeError, match="prepare_update"):
        plugin.global_normalisers(TensorDict({"response_mask": torch.ones(2, 3)}, batch_size=[2]), 1)

"""The registered verl trainer's glue on a real TransferQueue (verl 0.9.1's v1 trainer keeps the
batch there): rollouts put the way verl's agent loop puts them (``AgentLoopOutput.as_dict``, the
teacher's log-probs per position of the unpadded sequence), verl's own ``_balance_batch`` (padding
rows added, rows reordered over 2 data-parallel ranks) and ``_compute_old_log_prob`` (a worker group
that writes what verl's workers write), then the suite's ``_update_actor``: the keys it writes back
must reach each row by its TransferQueue key, and equal what the local engine computes for the same
rows in the same order (``Method.prepare`` on the whole batch, each loss term's normalisers over its
global mini-batch); for ExOPD verl's own ``_compute_ref_log_prob`` writes the reference's log-probs
where the loss reads them. The composed config is the suite's own overrides of a tiny run."""
import hashlib

import pytest
import torch

from conftest import METHODS_DIR, REPO
from opdbench.config import deep_update, load_yaml, resolve_run
from opdbench.train.losses import normalisers
from opdbench.train.engines.verl import launch, plugin
from opdbench.train.engines.verl.overrides import VerlResources, verl_overrides
from opdbench.method import Progress, ScoredBatch, StudentOutput
from opdbench.registry import get_method_class
from opdbench.train.rollout import Sequences

tq = pytest.importorskip("transfer_queue")
ray = pytest.importorskip("ray")

PROMPTS, N, DP = 3, 2, 2  # prompts, rollouts per prompt, data-parallel ranks
EOS = 7
# 6 rollouts; mini-batches of 2 prompts x 2 rollouts -> verl pads the batch to 8 rows
TINY = deep_update(load_yaml(REPO / "config" / "config.yaml"),
                   {"base": {"prompts_per_step": PROMPTS, "rollouts_per_prompt": N, "mini_batch_size": 4},
                    "method_settings": {"eopd": {"entropy": "topk", "k": 3}}})  # a top-k run on verl
K = 3


@pytest.fixture(scope="module")
def transfer_queue():
    from omegaconf import OmegaConf

    # TransferQueue's controller and storage unit are Ray actors of one logical CPU each
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


def values(key: str, name: str, n: int, scale: float = 2.0) -> torch.Tensor:
    """Deterministic per-(row key, field) numbers, so a row carries its values wherever verl moves it."""
    seed = int.from_bytes(hashlib.sha256(f"{key}/{name}".encode()).digest()[:4], "little")
    return -scale * torch.rand(n, generator=torch.Generator().manual_seed(seed))


def correct(key: str) -> float:
    """A rollout's verifier outcome: prompt 0 and 2 mixed, prompt 1 all right."""
    p, s = int(key.split("_")[0][len("prompt"):]), int(key.split("_")[1])
    return float(p == 1 or s == 0)


def rollouts(topk=False):
    """The agent loop's rows: key ``{uid}_{session}_0``; prompt lengths 3-5, responses 1-6 tokens. A
    top-k run: the teacher's top-k per position, and its sampled tokens' log-probs in the extra fields
    (agent_loop.py)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

    keys, fields, tags = [], [], []
    for p in range(PROMPTS):
        uid = f"prompt{p}"
        for s in range(N):
            key, plen, rlen = f"{uid}_{s}_0", 3 + p, 1 + (2 * p + 3 * s) % 6
            seq = plen + rlen
            output = AgentLoopOutput(prompt_ids=list(range(10, 10 + plen)), response_ids=list(range(20, 20 + rlen)),
                                     response_mask=[1] * rlen, response_logprobs=values(key, "rollout", rlen).tolist(),
                                     num_turns=2, metrics=AgentLoopMetrics(),
                                     extra_fields=teacher_fields(key, seq, topk))
            field = output.as_dict()
            field.update(uid=uid, session_id=s, global_steps=1)
            # verl's reward (the task's verifier, reward.py) on the response's last token
            field["rm_scores"] = torch.zeros(rlen).index_fill_(0, torch.tensor([rlen - 1]), correct(key))
            field["input_ids"] = torch.cat([field["prompts"], field["responses"]])
            field["position_ids"] = torch.arange(seq)
            keys.append(key)
            fields.append(field)
            tags.append({"status": "success", "prompt_len": plen, "response_len": rlen, "seq_len": seq,
                         "global_steps": 1, "min_global_steps": 1, "max_global_steps": 1})
    return keys, fields, tags


def teacher_fields(key, seq, topk):
    if not topk:
        return {"teacher_ids": torch.arange(seq, dtype=torch.int32)[:, None],
                "teacher_logprobs": values(key, "teacher", seq)[:, None]}
    return {"teacher_ids": torch.arange(seq * K, dtype=torch.int32).reshape(seq, K),
            "teacher_logprobs": values(key, "teacher", seq * K).reshape(seq, K),
            plugin.TOKEN_LOGPROBS: values(key, "token", seq)}


class WorkerGroup:
    """verl's actor worker group as the trainer talks to it: its dispatch info (2 ranks), the old-log-prob
    pass writing what verl's workers write (``log_probs`` and ``entropy`` per position of the unpadded
    sequence, position p + t - 1 for response token t), and the update reading the batch back."""

    def __init__(self, extra_names, reference):
        self._dispatch_info = {}
        self.extra_names = extra_names  # the Method.prepare extras the update should find
        self.reference = reference  # the reference worker ran (ExOPD)
        self.updates = []

    def _query_dispatch_info(self, role):
        return [0, 1]  # one process per rank

    def _write(self, batch, fields):
        from tensordict import TensorDict

        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["input_ids"])
        lens = [len(ids) for ids in data["input_ids"].unbind()]
        nested = lambda name, sign: torch.nested.as_nested_tensor(  # noqa: E731
            [sign * values(k, name, n) for k, n in zip(batch.keys, lens)], layout=torch.jagged)
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                        fields=TensorDict({field: nested(*how) for field, how in fields.items()},
                                          batch_size=[len(batch.keys)]))
        return batch

    def compute_log_prob(self, batch):
        return self._write(batch, {"log_probs": ("old", 1), "entropy": ("entropy", -1)})

    def compute_ref_log_prob(self, batch):  # the reference worker (verl's ref_policy_wg)
        return self._write(batch, {"log_probs": ("ref", 1)})

    def update_actor(self, batch):
        keys = [plugin.NORM_TOKENS, plugin.NORM_SEQS, plugin.ENTROPY] + [plugin.EXTRA + n for n in self.extra_names]
        if self.reference:
            keys.append(plugin.REFERENCE)
        if batch.extra_info.get("distillation_use_topk"):
            keys.append(plugin.TEACHER_TOKEN)
        got = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=keys)
        self.updates.append((list(batch.keys), list(batch.tags), got, dict(batch.extra_info)))
        return {"metrics": {"mfu": [0.0]}}


def trainer_for(method, extra_names, tmp_path, monkeypatch):
    """The registered trainer without its constructor (no Ray workers): verl's config composed from the
    suite's overrides, the fake worker group, a tokenizer's eos id."""
    from test_verl_overrides import compose
    from verl.trainer.ppo.utils import need_reference_policy
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.utils.config import omega_conf_to_dataclass

    from opdbench.train.engines.verl.overrides import TRAINER_MODE

    run = resolve_run(TINY, "math", method, 0, METHODS_DIR)
    args = verl_overrides(run, student="/models/student", teacher="/models/teacher", train_file="/data/train.parquet",
                          n_prompts=4000, max_prompt_length=96, out_dir=str(tmp_path), resources=VerlResources())
    monkeypatch.setenv(plugin.RUN_ENV, str(launch.write_run_file(run, tmp_path)))
    plugin.run_method.cache_clear()
    cls = TRAINER_REGISTRY[TRAINER_MODE]
    trainer = cls.__new__(cls)
    trainer.config = compose(args)
    trainer.distillation_config = omega_conf_to_dataclass(trainer.config.distillation)
    trainer.use_reference_policy = need_reference_policy(trainer.config)
    trainer.actor_rollout_wg = trainer.ref_policy_wg = WorkerGroup(extra_names, trainer.use_reference_policy)
    trainer.ref_in_actor = False
    trainer.tokenizer = type("Tokenizer", (), {"eos_token_id": EOS})()
    trainer.use_critic = False
    trainer.global_steps = run["train"]["steps"]  # the last step: REOPOLD refines (its entropy mask)
    return run, trainer


def local_expectation(run, method, keys, tags, mini_batch_size):
    """The local engine's view of the same rows in verl's order: log-probs, teacher log-probs and
    entropy at each response token, the padding rows empty, the rollout groups by prompt."""
    width = max(t["response_len"] for t in tags)
    B = len(keys)
    mask, logOld, logT, entropy, logRef = (torch.zeros(B, width) for _ in range(5))
    topk = "teacher_topk" in get_method_class(method, METHODS_DIR).needs
    topk_logT = torch.zeros(B, width, K)
    outcome = torch.zeros(B)
    uids = []
    for i, (key, tag) in enumerate(zip(keys, tags)):
        uids.append(key.rsplit("_", 2)[0] if not tag.get("is_padding") else f"padding{i}")  # no group of its own
        if tag.get("is_padding"):
            continue
        outcome[i] = correct(key)
        p, r = tag["prompt_len"], tag["response_len"]
        at = slice(p - 1, p + r - 1)
        mask[i, :r] = 1
        logOld[i, :r] = values(key, "old", p + r)[at]
        logT[i, :r] = values(key, "token" if topk else "teacher", p + r)[at]
        topk_logT[i, :r] = values(key, "teacher", (p + r) * K).reshape(p + r, K)[at]
        entropy[i, :r] = -values(key, "entropy", p + r)[at]
        logRef[i, :r] = values(key, "ref", p + r)[at]
    groups = {u: g for g, u in enumerate(dict.fromkeys(uids))}
    ids = torch.zeros(B, width, dtype=torch.long)
    batch = ScoredBatch(Sequences(ids, torch.ones_like(ids), torch.zeros_like(ids), ids, mask), logOld, logT, entropy,
                        torch.tensor([groups[u] for u in uids]), {"logRef": logRef, "outcome": outcome,
                                                                  **({"topk_logT": topk_logT} if topk else {})})
    local = get_method_class(method, METHODS_DIR)(run["hparams"], run["train"], 0)
    progress = Progress(run["train"]["steps"] - 1, run["train"]["steps"])
    local.prepare(batch, progress)
    tokens = torch.zeros(B)
    for rows in plugin.minibatch_rows(B, mini_batch_size, DP):
        mb = batch.select(rows)
        terms, _ = local.loss(mb, StudentOutput(logS=mb.logOld, topk_fkl=torch.zeros_like(mb.logOld)), progress)
        tokens[rows] = normalisers([terms])[0].tokens.float()
    return batch, tokens, logRef


@pytest.mark.parametrize("method, extra_names", [("opd", []), ("reopold", ["entropy_mask"]), ("exopd", []),
                                                 ("uniopd", ["advantage", "loss_tokens", "margin_shift", "outcome"]),
                                                 ("eopd", [])])
def test_the_registered_trainer_writes_each_rows_keys_through_transfer_queue(transfer_queue, tmp_path, monkeypatch,
                                                                             method, extra_names):
    from tensordict import TensorDict  # noqa: F401  (verl's helpers below build TensorDicts)
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    topk = method == "eopd"
    keys, fields, tags = rollouts(topk)
    partition = f"train_{method}"
    meta = tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    run, trainer = trainer_for(method, extra_names, tmp_path, monkeypatch)
    metrics = {}
    batch = trainer._balance_batch(meta, metrics)  # verl's own: pads to the mini-batch multiple, reorders
    assert len(batch) == 8 and sum(t.get("is_padding", False) for t in batch.tags) == 2
    assert batch.keys[:len(keys)] != keys  # the balance moved rows: order matters below
    batch = trainer._compute_old_log_prob(batch, metrics)  # verl's own: old_log_probs, entropy per response
    assert trainer.use_reference_policy == (method == "exopd")
    if trainer.use_reference_policy:
        batch = trainer._compute_ref_log_prob(batch, metrics)  # verl's own: ref_log_prob per response
    trainer._update_actor(batch, metrics)

    (seen_keys, seen_tags, got, info), = trainer.actor_rollout_wg.updates
    # a top-k run: verl's top-k forward KL in the forward, and the student's sampled-token log-probs beside it
    assert (info["distillation_use_topk"], info["distillation_only"]) == (topk, False)
    assert "update_actor" not in vars(trainer.actor_rollout_wg) or not topk or \
        trainer.actor_rollout_wg.update_actor.__func__ is WorkerGroup.update_actor  # the worker group is restored
    assert seen_keys == list(batch.keys)
    actor = trainer.config.actor_rollout_ref
    expected, tokens, logRef = local_expectation(run, method, seen_keys, seen_tags,
                                         actor.actor.ppo_mini_batch_size * actor.rollout.n)
    width = expected.mask.shape[1]
    assert torch.equal(plugin._padded(got[plugin.ENTROPY], width), expected.entropy)
    assert torch.equal(plugin._padded(got[plugin.NORM_TOKENS], 1)[:, 0], tokens)
    assert tokens.min() > 0  # every mini-batch has response tokens
    if method == "exopd":  # what the loss reads as the reference's log-probs (plugin.scored_batch)
        assert torch.equal(plugin._padded(got[plugin.REFERENCE], width) * expected.mask, logRef)
        assert logRef.abs().sum() > 0
    if topk:  # the sampled tokens' teacher log-probs, aligned to the response as verl aligns its own
        assert torch.equal(plugin._padded(got[plugin.TEACHER_TOKEN], width), expected.logT)
        assert expected.logT.abs().sum() > 0
    prepared = {name: value for name, value in expected.extras.items() if name not in ("logRef", "outcome", "topk_logT")}
    if method == "uniopd":  # the verifier's outcome, from verl's reward in TransferQueue
        prepared["outcome"] = expected.extras["outcome"]
        assert 0 < expected.extras["outcome"].sum() < len(seen_keys) - 2
    assert sorted(prepared) == extra_names
    for name, value in prepared.items():
        written = got[plugin.EXTRA + name]
        written = plugin._padded(written, width) if value.dim() == 2 else written  # per token, or per rollout
        assert torch.equal(written.to(value.dtype), value), name

"""The run's verl trainer: verl 0.9.1's synchronous PPO trainer (``PPOTrainerSync``, the default
``trainer.v1.trainer_mode``) with one step before each actor update: ``Method.prepare`` on the whole
rollout batch and each loss term's normalisers over its global mini-batch
(``plugin.prepare_update``), written to the batch as extra keys that the loss reads on every
micro-batch of every rank (``plugin.method_loss``). Registered with verl's ``register_trainer`` as
``opdbench`` (``overrides.py`` selects it) when the plugin loads.

verl's v1 trainer keeps the batch in TransferQueue (verl's ``verl-core`` extra, in the lock's
``[verl]`` section); where it is missing nothing is registered and verl refuses
``trainer_mode=opdbench`` by name. ``tests/test_verl_trainer.py`` runs ``_update_actor`` on a real
TransferQueue after verl's own batch balancing and old-log-prob pass.
"""
from __future__ import annotations

from opdbench.train.engines.verl import plugin
from opdbench.train.engines.verl.overrides import TRAINER_MODE

# What the update's preparation reads from verl's batch (TransferQueue fields after the old-log-prob
# pass: "entropy" is the rollout policy's there, stored for the actor's entropy metric).
FIELDS = ("prompts", "responses", "response_mask", "old_log_probs", "entropy", "teacher_logprobs", "uid")


def fields_of(needs) -> list[str]:
    """The fields to read for a method with these needs (the reference's where verl computed them,
    the reward where the method reads the verifier's outcome, the teacher's top-k ids and the
    agent-loop worker's extra fields, with the sampled tokens' teacher log-probs, in a top-k run)."""
    return list(FIELDS) + ([plugin.REFERENCE] if "ref_logprobs" in needs else []) + (
        [plugin.OUTCOME] if "outcome" in needs else []) + (
        ["teacher_ids", "extra_fields"] if "teacher_topk" in needs else [])


def _lengths(fields) -> tuple[list[int], list[int]]:
    """Each row's prompt and response lengths, as verl's ``no_padding_2_padding`` reads them: from the
    jagged fields, or from the attention mask where they are padded; without a mask, rows stacked
    because every one had the same length."""
    prompts, responses = fields["prompts"], fields["responses"]
    if getattr(prompts, "is_nested", False):
        return prompts.offsets().diff().tolist(), responses.offsets().diff().tolist()
    if "attention_mask" in fields.keys() and not getattr(fields["attention_mask"], "is_nested", False):
        mask = fields["attention_mask"]
        return mask[:, :prompts.shape[1]].sum(1).tolist(), mask[:, prompts.shape[1]:].sum(1).tolist()
    return [prompts.shape[1]] * len(prompts), (
        responses.offsets().diff().tolist() if getattr(responses, "is_nested", False)
        else [responses.shape[1]] * len(responses))


def sampled_token_logprobs(fields, width: int):
    """[B, width]: each response token's teacher log-prob from the agent-loop worker's extra fields
    (agent_loop.py: per position of the unpadded prompt + response, position j holding token j + 1's),
    i.e. positions prompt - 1 ... prompt + response - 2, as verl aligns its own teacher log-probs
    (``no_padding_2_padding``); a row verl's batch balancing added (an empty response) gets zeros."""
    import torch

    out = torch.zeros(len(fields["responses"]), width)
    rows = [(extra or {}).get(plugin.TOKEN_LOGPROBS) for extra in plugin._plain(fields["extra_fields"])]
    mask = fields["response_mask"]
    empty = [not bool(m.any()) for m in (mask.unbind() if getattr(mask, "is_nested", False) else mask)]
    for i, (row, prompt, response) in enumerate(zip(rows, *_lengths(fields), strict=True)):
        if empty[i]:  # a row verl's batch balancing added (another row's extra fields, no response)
            continue
        if row is None:
            raise RuntimeError(f"rollout {i} has no '{plugin.TOKEN_LOGPROBS}' in its extra fields: the run's "
                               f"agent-loop workers must be agent_loop.TeacherTokenWorker "
                               f"(rollout.agent.agent_loop_manager_class, overrides._topk)")
        row = torch.as_tensor(row, dtype=torch.float32)
        if row.shape[0] != prompt + response:
            raise ValueError(f"row {i}: {row.shape[0]} teacher log-probs for a sequence of {prompt + response} tokens")
        out[i, :min(response, width)] = row[prompt - 1:prompt - 1 + min(response, width)]
    return out


def update_keys(fields, method, progress, mini_batch_size: int, dp_size: int) -> dict:
    """The extra batch keys of one rollout batch (``fields``: verl's batch as the trainer holds it,
    in the order verl dispatches it to the ranks, i.e. after ``_balance_batch``)."""
    mask = fields["response_mask"]
    width = int(mask.offsets().diff().max()) if getattr(mask, "is_nested", False) else mask.shape[1]
    if "extra_fields" in fields.keys():  # a top-k run: the sampled tokens' teacher log-probs beside verl's top-k
        fields = fields.clone(recurse=False)
        fields[plugin.TEACHER_TOKEN] = sampled_token_logprobs(fields, width)
    batch = plugin.scored_batch(fields, width, entropy_key="entropy")
    if "teacher_prefix" in method.needs:  # the prefix agent loop's lengths: the tokens the teacher wrote
        from opdbench.train.common import teacher_token_mask

        lengths = [(extra or {}).get(plugin.PREFIX_LENGTH) for extra in plugin._plain(fields["extra_fields"])]
        missing = [i for i, n in enumerate(lengths) if n is None and batch.mask[i].any()]
        if missing:
            raise RuntimeError(f"rollouts {missing} have no '{plugin.PREFIX_LENGTH}': the run's agent loop must be "
                               f"the prefix loop (rollout.agent.default_agent_loop, overrides._topk)")
        batch.extras["teacher_token"] = teacher_token_mask([int(n or 0) for n in lengths], batch.mask)
    rows = plugin.minibatch_rows(batch.mask.shape[0], mini_batch_size, dp_size)
    return plugin.prepare_update(method, batch, progress, rows)


def register() -> bool:
    """Register the trainer with verl; False where verl's v1 trainer cannot load (no TransferQueue)."""
    try:
        import transfer_queue as tq
        from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
        from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    except ImportError:
        return False
    if TRAINER_MODE in TRAINER_REGISTRY:
        return True
    from tensordict import TensorDict

    from opdbench.method import Progress

    @register_trainer(TRAINER_MODE)
    class OPDBenchTrainer(PPOTrainerSync):
        def _update_actor(self, batch, metrics):
            run = plugin.run_file()
            method = plugin.run_method(run["method"])
            fields = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                     select_fields=fields_of(method.needs))
            group = self.actor_rollout_wg
            if "actor" not in group._dispatch_info:  # as verl's _balance_batch reads the dp size
                group._dispatch_info["actor"] = group._query_dispatch_info("actor")
            dp_size = max(group._dispatch_info["actor"]) + 1
            actor = self.config.actor_rollout_ref
            keys = update_keys(fields, method, Progress(self.global_steps - 1, run["train"]["steps"]),
                               actor.actor.ppo_mini_batch_size * actor.rollout.n, dp_size)
            tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                            fields=TensorDict(keys, batch_size=[len(batch.keys)]))
            if "teacher_topk" not in method.needs:
                return super()._update_actor(batch, metrics)
            # verl's top-k mode without a policy gradient skips the student's sampled-token log-probs
            # in its forward (extra_info distillation_only); the method's loss reads them too
            update = group.update_actor  # verl binds a worker group's methods to the instance

            def update_actor(meta, *args, **kwargs):
                meta.extra_info["distillation_only"] = False
                return update(meta, *args, **kwargs)
            group.update_actor = update_actor
            try:
                return super()._update_actor(batch, metrics)
            finally:
                group.update_actor = update

    return True

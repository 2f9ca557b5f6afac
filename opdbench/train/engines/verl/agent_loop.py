"""The teacher's top-k *and* sampled-token log-probs in one verl run (need ``teacher_topk``: EOPD,
TrOPD), through verl 0.9.1's agent-loop-manager extension point
(``actor_rollout_ref.rollout.agent.agent_loop_manager_class``, set by ``overrides._topk``).

verl's teacher loop asks vLLM for one mode per run: with a top-k loss (``use_topk``) it keeps each
position's k most likely tokens and drops the sampled token's log-prob where it is not among them
(``extract_prompt_logprobs``). The worker here lets verl fill ``teacher_ids`` / ``teacher_logprobs``
with the top-k as usual (verl's own top-k forward KL reads them in the student's forward) and asks
the same teacher server once more with ``prompt_logprobs=0``, the sampled-token mode, keeping
those log-probs in the rollout's ``extra_fields`` under ``TOKEN_LOGPROBS`` (verl's layout: one per
position of the unpadded prompt + response, position j holding token j + 1's, a dummy last); the
registered trainer reads them as the batch's ``logT``. Cost: a second prefill of every sequence on
the teacher (vLLM skips its prefix cache for prompt log-probs).

Teacher-written prefixes (need ``teacher_prefix``: TrOPD's off-policy guidance): the agent loop
``TeacherPrefixAgentLoop`` (verl's ``register``, selected by ``rollout.agent.default_agent_loop``,
``overrides._prefix``) draws the rollout's prefix length as the method does (``Method.prefix_lengths``,
its cosine-annealed maximum at this step), asks the sample's teacher server for that many tokens,
lets the student continue up to the response length (not after a prefix that ended the answer), and
records the prefix length in its extra fields (``PREFIX_LENGTH``); the trainer turns it into
``extras["teacher_token"]``. The worker hands its teacher clients to the loop (``TEACHERS``).

Importing this module imports verl and Ray: only verl's processes do (through the manager's name).
"""
from __future__ import annotations

from typing import Any
from uuid import uuid4

import ray
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from opdbench.train.engines.verl import plugin
from opdbench.train.engines.verl.overrides import PREFIX_AGENT_LOOP

TOKEN_LOGPROBS = plugin.TOKEN_LOGPROBS
PREFIX_LENGTH = plugin.PREFIX_LENGTH
# this process's agent-loop worker's teacher server manager (one worker per Ray actor process), for
# the prefix loop, which verl constructs with the student's client only
TEACHERS: dict[str, Any] = {}
# the sampled-token mode of verl's teacher requests (teacher_manager._get_teacher_sampling_params with
# use_topk off): a forward pass over the sequence, one log-prob per position, temperature 1
SAMPLED_TOKEN_PARAMS = {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0, "detokenize": False}


def routing_key(teacher_key: str, sample_kwargs: dict[str, Any] | None):
    """The sample's value of ``distillation.teacher_key`` as verl's worker reads it."""
    value = (sample_kwargs or {}).get(teacher_key)
    return value.item() if hasattr(value, "item") else value


async def sampled_token_logprobs(manager, sequence_ids: list[int], key, output=None) -> torch.Tensor:
    """The teacher's log-prob of each token of ``sequence_ids`` [len], verl's layout (position j:
    token j + 1's; the last a dummy 0), from the teacher server the sample routes to."""
    teacher = manager._resolve_teacher_key(key)
    mm = (getattr(output, "multi_modal_data", None) or {}) if output is not None else {}
    result = await manager.teacher_client[teacher].generate(
        request_id=uuid4().hex, prompt_ids=sequence_ids, sampling_params=dict(SAMPLED_TOKEN_PARAMS),
        image_data=mm.get("images"), video_data=mm.get("videos"), audio_data=mm.get("audios"),
        mm_processor_kwargs=getattr(output, "mm_processor_kwargs", None),
        mm_processor_output=getattr(output, "mm_processor_output", None))
    ids = torch.tensor(result.extra_fields["prompt_ids"], dtype=torch.long)[:, 0]
    logprobs = torch.tensor(result.extra_fields["prompt_logprobs"], dtype=torch.float32)[:, 0]
    expected = torch.tensor(sequence_ids[1:], dtype=torch.long)
    if logprobs.shape[0] != len(sequence_ids) or not torch.equal(ids[:-1], expected):
        raise RuntimeError(f"teacher '{teacher}' returned log-probs of other tokens than the sequence's "
                           f"({logprobs.shape[0]} positions for {len(sequence_ids)} tokens)")
    return logprobs


def prefix_length(run: dict[str, Any], method, sample: dict[str, Any]) -> int:
    """The rollout's teacher-prefix length: the method's draw (``prefix_lengths``) at the sample's step,
    from a stream of the run's seed, the step, and the sample (its prompt index and rollout number)."""
    from opdbench.method import Progress
    from opdbench.train.common import STREAM_PREFIX, step_seed

    step = int(sample["global_steps"]) - 1  # verl counts steps from 1
    index, session = int(sample.get("index", 0)), int(sample.get("session_id", 0))
    seed = hash((step_seed(run["seed"], step, STREAM_PREFIX), index, session)) % (2**63 - 1)
    (length,) = method.prefix_lengths(1, run["train"]["max_new_tokens"], Progress(step, run["train"]["steps"]),
                                      torch.Generator().manual_seed(seed))
    return int(length)


@register(PREFIX_AGENT_LOOP)
class TeacherPrefixAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop with the first tokens of the response written by the teacher."""

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> AgentLoopOutput:
        run = plugin.run_file()
        length = prefix_length(run, plugin.run_method(run["method"]), kwargs)
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        prefix: list[int] = []
        if length > 0:
            manager = TEACHERS["manager"]
            teacher = manager._resolve_teacher_key(routing_key(manager.teacher_key, kwargs))
            draft = await manager.teacher_client[teacher].generate(
                request_id=uuid4().hex, prompt_ids=prompt_ids, sampling_params={**sampling_params, "max_tokens": length})
            prefix = list(draft.token_ids[:length])
            eos = self.tokenizer.eos_token_id
            # the answer ended inside the prefix: at the student's eos, or where the teacher server stopped
            # short of the length (a stop token of the teacher's own generation config)
            ended = eos in prefix or len(prefix) < length
            prefix = prefix[:prefix.index(eos) + 1] if eos in prefix else prefix
        else:
            ended = False
        budget = self.response_length - len(prefix)
        continuation: list[int] = []
        # verl's client writes the weights' versions (min/max_global_steps) into a reply's extra fields;
        # verl's worker tags the rollout with them and its step metrics read them
        step = int(kwargs["global_steps"])
        extra = {"min_global_steps": step, "max_global_steps": step}
        if budget > 0 and not ended:
            output = await self.server_manager.generate(
                request_id=uuid4().hex, prompt_ids=prompt_ids + prefix,
                sampling_params={**sampling_params, "max_tokens": budget}, priority=int(priority))
            continuation = list(output.token_ids[:budget])
            extra = dict(output.extra_fields)
        merged, response_mask, _ = await self.ct_merge_assistant_token(prompt_ids, prefix + continuation, [], None)
        response_ids = merged.token_ids[-len(response_mask):] if response_mask else []
        prompt_ids = merged.token_ids[:len(merged.token_ids) - len(response_mask)]
        extra.update({PREFIX_LENGTH: min(len(prefix), self.response_length), "turn_scores": [], "tool_rewards": []})
        return AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response_ids[:self.response_length],
                               response_mask=response_mask[:self.response_length], num_turns=2, metrics={},
                               extra_fields=extra)


class TeacherTokenWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """verl's TransferQueue agent-loop worker whose teacher step also keeps the sampled tokens' log-probs
    (and whose teacher clients the prefix loop uses)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.distillation_enabled:
            TEACHERS["manager"] = self.teacher_server_manager

    async def _compute_teacher_logprobs(self, output, prompt_ids, response_ids, validate, sample_kwargs=None):
        await super()._compute_teacher_logprobs(output, prompt_ids=prompt_ids, response_ids=response_ids,
                                                validate=validate, sample_kwargs=sample_kwargs)
        if self.distillation_enabled and not validate:
            output.extra_fields[TOKEN_LOGPROBS] = await sampled_token_logprobs(
                self.teacher_server_manager, list(prompt_ids) + list(response_ids),
                routing_key(self.teacher_key, sample_kwargs), output)


class TeacherTokenManager(AgentLoopManagerTQ):
    """verl's TransferQueue agent-loop manager running ``TeacherTokenWorker``s."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = ray.remote(TeacherTokenWorker)


MANAGER = f"{TeacherTokenManager.__module__}.{TeacherTokenManager.__qualname__}"

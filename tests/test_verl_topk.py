"""A top-k run on verl (need ``teacher_topk``: EOPD with ``entropy: topk``, TrOPD with or without
teacher prefixes): the overrides compose with verl's config classes and name the agent-loop manager
(and, with prefixes, the prefix agent loop); its worker asks the teacher for the top-k and for the
sampled tokens' log-probs and the trainer aligns the latter to the response; the prefix loop lets the
teacher write the first tokens and the student the rest; verl's loss entry point, with verl's own
top-k forward KL computed from the student's logits, gives the local engine's loss and gradient
(fp32) for every variant, step and loss_agg_mode."""
import asyncio
from types import SimpleNamespace

import pytest
import torch

from conftest import METHODS_DIR, REPO
from opdbench.blocks.policy import AGG_MODES
from opdbench.config import load_yaml, resolve_run
from opdbench.method import Progress, ScoredBatch, StudentOutput
from opdbench.registry import get_method_class
from opdbench.train.engines.verl import launch, plugin, trainer
from opdbench.train.engines.verl.engine import VerlEngine
from opdbench.train.common import teacher_token_mask
from opdbench.train.engines.verl.overrides import (PREFIX_AGENT_LOOP, TOPK_AGENT_LOOP_MANAGER, VerlResources,
                                                   loss_name, verl_overrides)
from opdbench.train.losses import batch_loss
from opdbench.train.rollout import Sequences

TINY = load_yaml(REPO / "config" / "config.yaml")
B, R, PROMPT, V, K, DP, MINI = 8, 6, 3, 10, 4, 2, 4  # rows, response width, prompt, vocabulary, top-k, ranks, mini-batch
LENGTHS = [6, 3, 5, 1, 4, 6, 2, 5]
PREFIXES = [2, 0, 3, 1, 0, 6, 1, 0]  # teacher-written tokens per rollout (TrOPD's guidance)
# runs a top-k verl run can train: EOPD gating on its top-k entropy bound, TrOPD's variants without prefixes
RUNS = [("eopd", {"entropy": "topk", "k": K}), ("eopd", {"entropy": "topk", "k": K, "tau": 1.2, "alpha": 0.5}),
        ("tropd", {"k": K}), ("tropd", {"guidance": False, "k": K}),
        ("tropd", {"guidance": False, "k": K, "region": "none"}),
        ("tropd", {"guidance": False, "k": K, "region": "threshold", "outlier": "clip"}),
        ("tropd", {"guidance": False, "k": K, "region": "threshold", "outlier": "mask"})]


def run_of(method, hp, config=TINY):
    run = resolve_run(config, "math", method, 0, METHODS_DIR)
    run["hparams"] = get_method_class(method, METHODS_DIR).resolve_hparams({**run["hparams"], **hp})
    return run


@pytest.mark.parametrize("method,hp", [RUNS[0], RUNS[2], RUNS[3]], ids=["eopd", "tropd", "tropd-no-guidance"])
def test_a_topk_run_composes_with_verls_config_and_names_the_agent_loop_manager(method, hp):
    from verl.utils.import_utils import load_class_from_fqn
    from verl.trainer.ppo.v1 import AgentLoopManagerTQ

    from test_verl_overrides import check_with_verls_classes, compose

    import verl  # noqa: F401  (registers the methods' losses: the top-k ones with use_topk)
    run = run_of(method, {key: value for key, value in hp.items() if key != "k"})  # the method's own k
    cls = get_method_class(method, METHODS_DIR)
    assert cls.needs_of(run["hparams"]) <= VerlEngine.capabilities
    args = verl_overrides(run, student="/models/student", teacher="/models/teacher", train_file="/data/train.parquet",
                          n_prompts=4000, max_prompt_length=96, out_dir="/runs/x", resources=VerlResources())
    k = run["hparams"]["k"]
    assert f"distillation.distillation_loss.topk={k}" in args
    assert f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={TOPK_AGENT_LOOP_MANAGER}" in args
    prefixes = "teacher_prefix" in cls.needs_of(run["hparams"])
    assert (f"actor_rollout_ref.rollout.agent.default_agent_loop={PREFIX_AGENT_LOOP}" in args) == prefixes
    cfg = compose(args)
    check_with_verls_classes(cfg)
    from verl.utils.config import omega_conf_to_dataclass

    distillation = omega_conf_to_dataclass(cfg.distillation)
    assert distillation.distillation_loss.loss_settings.use_topk and distillation.distillation_loss.topk == k
    # verl lets vLLM return k log-probs per position (its max_logprobs)
    assert [t.inference.engine_kwargs["vllm"]["max_logprobs"] for t in distillation.teacher_models.values()] == [k]
    manager = load_class_from_fqn(cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "AgentLoopManager")
    from opdbench.train.engines.verl.agent_loop import MANAGER, TeacherTokenWorker

    assert issubclass(manager, AgentLoopManagerTQ) and MANAGER == TOPK_AGENT_LOOP_MANAGER
    # the workers it starts (create() starts them as Ray actors) are ours
    assert manager(cfg, llm_client=None).agent_loop_workers_class.__ray_actor_class__ is TeacherTokenWorker
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    loop = cfg.actor_rollout_ref.rollout.agent.default_agent_loop  # registered where the manager's module loads
    assert loop in _agent_loop_registry and (loop == PREFIX_AGENT_LOOP) == prefixes


def test_eopd_with_the_full_entropy_and_tropds_jsd_outlier_stay_refused_on_verl():
    from opdbench.train.engines import missing_capability

    eopd, tropd = (get_method_class(m, METHODS_DIR) for m in ("eopd", "tropd"))
    assert "teacher_entropy" in missing_capability(eopd, "verl", {})
    assert missing_capability(eopd, "verl", {"entropy": "topk"}) is None
    assert missing_capability(tropd, "verl", {}) is None
    assert missing_capability(tropd, "verl", {"guidance": False}) is None
    assert "'student_topk'" in missing_capability(tropd, "verl", {"guidance": False, "outlier": "jsd"})


# -- the teacher's two requests ---------------------------------------------------------------
def teacher_distribution(sequence):
    """A fixed teacher: log-probs over V at every position, a function of the position and its token."""
    g = torch.Generator().manual_seed(7)
    table = torch.log_softmax(2 * torch.randn(64, V, generator=g), -1)
    return torch.stack([table[(3 * p + tok) % 64] for p, tok in enumerate(sequence)])


class FakeTeacher:
    """An LLMServerClient of a vLLM teacher as verl's server answers (``extract_prompt_logprobs``): per
    position of the sequence but the first, the top-k (prompt_logprobs=k) or the next token's log-prob
    (prompt_logprobs=0), [S, max(k, 1)], a dummy last row."""

    def __init__(self):
        self.calls = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        k = sampling_params["prompt_logprobs"]
        self.calls.append(k)
        logp = teacher_distribution(prompt_ids)
        ids, values = [], []
        for p in range(len(prompt_ids) - 1):
            if k == 0:
                ids.append([prompt_ids[p + 1]])
                values.append([logp[p, prompt_ids[p + 1]].item()])
            else:
                top = logp[p].topk(k)
                ids.append(top.indices.tolist())
                values.append(top.values.tolist())
        ids.append([0] * max(k, 1))
        values.append([0.0] * max(k, 1))
        return SimpleNamespace(extra_fields={"prompt_ids": ids, "prompt_logprobs": values})


def test_the_worker_asks_the_teacher_for_its_topk_and_its_sampled_tokens_and_the_trainer_aligns_them(tmp_path):
    from verl.experimental.agent_loop import AgentLoopOutput
    from verl.experimental.teacher_loop.teacher_manager import AsyncTeacherLLMServerManager
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    from opdbench.train.engines.verl.agent_loop import TOKEN_LOGPROBS, TeacherTokenWorker
    from test_verl_overrides import compose

    assert TOKEN_LOGPROBS == plugin.TOKEN_LOGPROBS
    run = run_of("eopd", {"entropy": "topk", "k": K})
    cfg = compose(verl_overrides(run, student="/m/s", teacher="/m/t", train_file="/d/t.parquet", n_prompts=64,
                                 max_prompt_length=PROMPT, out_dir=tmp_path))
    client = FakeTeacher()
    worker = object.__new__(TeacherTokenWorker)  # verl's worker state that the teacher step reads
    worker.distillation_enabled, worker.teacher_key = True, cfg.distillation.teacher_key
    worker.teacher_server_manager = AsyncTeacherLLMServerManager(cfg, {"default": client})  # verl names its single teacher so
    rows = []
    for i, n in enumerate([4, 2]):
        prompt, response = [1 + i, 2, 3], [(5 * i + 3 * t) % V for t in range(n)]
        output = AgentLoopOutput(prompt_ids=prompt, response_ids=response, response_mask=[1] * n, metrics={})
        asyncio.run(worker._compute_teacher_logprobs(output, prompt, response, validate=False, sample_kwargs={}))
        field = output.as_dict()  # as verl's TransferQueue worker stores the rollout
        rows.append({key: field[key] for key in ("prompts", "responses", "response_mask", "teacher_ids", "teacher_logprobs",
                                                  "extra_fields")})
        logp = teacher_distribution(prompt + response)
        assert field["teacher_logprobs"].shape == (len(prompt) + n, K)  # verl's top-k, as usual
        assert torch.allclose(field["teacher_logprobs"][0], logp[0].topk(K).values)
    assert client.calls == [K, 0, K, 0]  # the top-k, then the sampled tokens
    fields = list_of_dict_to_tensordict(rows)
    logT = trainer.sampled_token_logprobs(fields, width=4)
    for i, n in enumerate([4, 2]):
        prompt, response = [1 + i, 2, 3], [(5 * i + 3 * t) % V for t in range(n)]
        logp = teacher_distribution(prompt + response)
        expected = [logp[PROMPT - 1 + t, response[t]].item() for t in range(n)] + [0.0] * (4 - n)
        assert logT[i].tolist() == pytest.approx(expected)


def test_a_rollout_without_the_sampled_tokens_log_probs_is_refused():
    """A top-k run whose agent loop did not ask for them (another manager or loop) stops, instead of
    training on a teacher log-prob of 0."""
    from tensordict import NonTensorStack, TensorDict

    fields = TensorDict({"prompts": jagged([torch.ones(2, dtype=torch.long)] * 2),
                         "responses": jagged([torch.ones(2, dtype=torch.long), torch.ones(1, dtype=torch.long)]),
                         "response_mask": jagged([torch.ones(2), torch.ones(1)]),
                         "extra_fields": NonTensorStack({plugin.TOKEN_LOGPROBS: torch.zeros(4)}, {})},
                        batch_size=[2])
    with pytest.raises(RuntimeError, match="rollout 1 has no 'opdbench_teacher_token_logprobs'"):
        trainer.sampled_token_logprobs(fields, width=2)


def test_a_teacher_answer_for_other_tokens_is_refused():
    from opdbench.train.engines.verl.agent_loop import sampled_token_logprobs

    class Wrong(FakeTeacher):
        async def generate(self, request_id, *, prompt_ids, **kwargs):
            return await super().generate(request_id, prompt_ids=prompt_ids[:-1] + [9], **kwargs)

    manager = SimpleNamespace(_resolve_teacher_key=lambda key: "t", teacher_client={"t": Wrong()})
    with pytest.raises(RuntimeError, match="other tokens"):
        asyncio.run(sampled_token_logprobs(manager, [1, 2, 3, 4], None))


# -- the loss -----------------------------------------------------------------------------
def batch_logits(seed=0):
    """Per response position: the rollout student's, the current student's (base + theta) and the
    teacher's logits over V; the sampled tokens; the response mask."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(R)[None] < torch.tensor(LENGTHS)[:, None]).float()
    old = 1.5 * torch.randn(B, R, V, generator=g)
    base = old + 0.3 * torch.randn(B, R, V, generator=g)  # ratios off 1: the clip acts
    teacher = old + 1.5 * torch.randn(B, R, V, generator=g)
    tokens = torch.multinomial(torch.softmax(old.reshape(-1, V), -1), 1, generator=g).reshape(B, R)
    return mask, old, base, teacher, tokens


def jagged(per_row):
    return torch.nested.nested_tensor(per_row, layout=torch.jagged)


def sequence_rows(values, rows, fill):
    """Response-position values [B, R, ...] as verl's per-sequence rows: position PROMPT - 1 + t holds
    response token t's (the model output at that position predicts it), the rest ``fill``."""
    out = []
    for i in rows:
        n = LENGTHS[i]
        pad = torch.full((PROMPT - 1, *values.shape[2:]), fill, dtype=values.dtype)
        last = torch.full((1, *values.shape[2:]), fill, dtype=values.dtype)
        out.append(torch.cat([pad, values[i, :n], last]))
    return out


def verl_fields(rows, mask, old, teacher, tokens, step):
    """verl's batch for these rows: prompts, responses, masks, the rollout's log-probs and entropy,
    the teacher's top-k (teacher_ids / teacher_logprobs per sequence position) and the agent loop's
    extra fields with its sampled-token log-probs."""
    from tensordict import NonTensorStack, TensorDict
    from verl.utils import tensordict_utils as tu

    old_logp, teacher_logp = torch.log_softmax(old, -1), torch.log_softmax(teacher, -1)
    top = teacher_logp.topk(K, -1)
    token_logT = teacher_logp.gather(-1, tokens[..., None])[..., 0]
    data = TensorDict({
        "prompts": jagged([torch.ones(PROMPT, dtype=torch.long)] * len(rows)),
        "responses": jagged([tokens[i, :LENGTHS[i]] for i in rows]),
        "response_mask": mask[rows],
        "old_log_probs": old_logp.gather(-1, tokens[..., None])[..., 0][rows] * mask[rows],
        "entropy": -(old_logp.exp() * old_logp).sum(-1)[rows] * mask[rows],
        "teacher_logprobs": jagged(sequence_rows(top.values, rows, 0.0)),
        "teacher_ids": jagged(sequence_rows(top.indices, rows, 0)),
        "extra_fields": NonTensorStack(*[{plugin.TOKEN_LOGPROBS: t, plugin.PREFIX_LENGTH: PREFIXES[i]}
                                         for i, t in zip(rows, sequence_rows(token_logT, rows, 0.0))]),
    }, batch_size=[len(rows)])
    tu.assign_non_tensor(data, max_response_len=R, global_steps=step + 1)
    tu.assign_non_tensor_stack(data, "uid", [f"prompt{i // 2}" for i in rows])
    return data


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("step", [0, 7])
@pytest.mark.parametrize("method,hp", RUNS, ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in hp.items())}" for m, hp in RUNS])
def test_verls_topk_loss_entry_point_gives_the_local_engines_loss_and_gradient(tmp_path, monkeypatch, method, hp,
                                                                                 step, mode):
    import verl  # noqa: F401
    from verl.trainer.distillation.fsdp.losses import compute_forward_kl_topk
    from verl.trainer.distillation.losses import distillation_loss
    from verl.workers.config import DistillationConfig, DistillationLossConfig

    from test_verl_loss import check_ranks  # DP = 2 ranks there too

    config = {**TINY, "base": {**TINY["base"], "loss_agg_mode": mode, "steps": 10}}
    run = run_of(method, hp, config)
    cls = get_method_class(method, METHODS_DIR)
    progress = Progress(step, 10)
    monkeypatch.setenv(plugin.RUN_ENV, str(launch.write_run_file(run, tmp_path)))
    plugin.run_method.cache_clear()
    mask, old, base, teacher, tokens = batch_logits()
    old_logp, teacher_logp = torch.log_softmax(old, -1), torch.log_softmax(teacher, -1)
    top = teacher_logp.topk(K, -1)
    gather = lambda logp, ids: logp.gather(-1, ids)  # noqa: E731

    # the local engine: its scored batch and each mini-batch's loss whole, from the student's log-probs
    local = cls(run["hparams"], run["train"], 0)
    ids = torch.zeros(B, R, dtype=torch.long)
    batch = ScoredBatch(Sequences(ids, torch.ones_like(ids), torch.zeros_like(ids), ids, mask),
                        gather(old_logp, tokens[..., None])[..., 0] * mask,
                        gather(teacher_logp, tokens[..., None])[..., 0] * mask,
                        -(old_logp.exp() * old_logp).sum(-1) * mask, torch.arange(B) // 2,
                        {"topk_ids": top.indices, "topk_logT": top.values * mask[..., None]})
    if "teacher_prefix" in local.needs:
        batch.extras["teacher_token"] = teacher_token_mask(PREFIXES, mask)
    local.prepare(batch, progress)
    # verl: the registered trainer's preparation on the whole batch, then each rank's micro-batches
    fields = verl_fields(list(range(B)), mask, old, teacher, tokens, step)
    keys = trainer.update_keys(fields, cls(run["hparams"], run["train"], 0), progress, MINI, DP)
    assert torch.equal(keys[plugin.TEACHER_TOKEN], batch.logT)  # the sampled tokens' teacher log-probs
    loss_config = DistillationLossConfig(loss_mode=loss_name(method), use_task_rewards=False, topk=K,
                                         use_policy_gradient=False, loss_max_clamp=None, log_prob_min_clamp=None)
    settings = DistillationConfig(distillation_loss=loss_config)
    actor = SimpleNamespace(loss_agg_mode="token-sum", global_batch_info={}, loss_scale_factor=None)
    for rows in plugin.minibatch_rows(B, MINI, DP):
        theta = torch.zeros(B, R, V, requires_grad=True)
        logp = torch.log_softmax(base + theta, -1)
        student = StudentOutput(logS=gather(logp, tokens[..., None])[..., 0][rows],
                                topk_logS=gather(logp, top.indices)[rows])
        terms, _ = local.loss(batch.select(rows), student, progress)
        expected = batch_loss(terms)
        (expected_grad,) = torch.autograd.grad(expected, theta)

        theta = torch.zeros(B, R, V, requires_grad=True)
        logits = base + theta
        info = {"dp_size": DP, "batch_num_tokens": mask[rows].sum().item(), "global_batch_size": MINI}
        total = 0.0
        for rank_rows in rows.chunk(DP):
            for row in rank_rows.tolist():
                data = verl_fields([row], mask, old, teacher, tokens, step)
                del data["extra_fields"]  # the trainer's keys reach the micro-batch instead
                for key, value in keys.items():
                    data[key] = value[[row]]
                from verl.utils import tensordict_utils as tu
                tu.assign_non_tensor(data, **info)
                # verl's forward: the student's logits per sequence position, its top-k forward KL by
                # verl's own function (the logits processor), its sampled-token log-probs
                seq_logits = torch.cat(sequence_rows(logits, [row], 0.0))[None]
                fkl = compute_forward_kl_topk(student_logits=seq_logits, teacher_topk_log_probs=data["teacher_logprobs"],
                                              teacher_topk_ids=data["teacher_ids"], config=settings, data_format="thd")
                seq_logS = torch.cat(sequence_rows(gather(torch.log_softmax(logits, -1), tokens[..., None])[..., 0],
                                                   [row], 0.0))
                model_output = {"log_probs": seq_logS, "distillation_losses": fkl["distillation_losses"][0]}
                loss, _ = distillation_loss(actor, settings, model_output, data)
                total = total + loss
        check_ranks(total, theta, expected, expected_grad)


# -- teacher prefixes (TrOPD's guidance) --------------------------------------------------------
class Writer:
    """An LLMServerClient that writes tokens: ``tokens(prompt_ids)`` up to max_tokens."""

    def __init__(self, tokens):
        self.tokens, self.calls = tokens, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.calls.append((list(prompt_ids), sampling_params["max_tokens"], sampling_params["temperature"]))
        # verl's client writes the weights' versions into a reply's extra fields (llm_server.py)
        return SimpleNamespace(token_ids=self.tokens(prompt_ids)[:sampling_params["max_tokens"]], log_probs=None,
                               extra_fields={"min_global_steps": 7, "max_global_steps": 7}, num_preempted=None,
                               routed_experts=None)


def test_the_prefix_agent_loop_lets_the_teacher_write_the_first_tokens_and_the_student_the_rest(tmp_path,
                                                                                              monkeypatch):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.experimental.teacher_loop.teacher_manager import AsyncTeacherLLMServerManager
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from conftest import tiny
    from opdbench.train.engines.verl import agent_loop
    from test_verl_overrides import compose

    tok, _ = tiny(tmp_path)
    run = run_of("tropd", {})
    monkeypatch.setenv(plugin.RUN_ENV, str(launch.write_run_file(run, tmp_path)))
    plugin.run_method.cache_clear()
    cfg = compose(verl_overrides(run, student="/m/s", teacher="/m/t", train_file="/d/t.parquet", n_prompts=64,
                                 max_prompt_length=32, out_dir=tmp_path))
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == PREFIX_AGENT_LOOP
    eos = tok.eos_token_id
    teacher = Writer(lambda prompt: [11, 12, 13, 14, 15] * 20)
    student = Writer(lambda prompt: [21, 22, 23] * 30)
    monkeypatch.setitem(agent_loop.TEACHERS, "manager", AsyncTeacherLLMServerManager(cfg, {"default": teacher}))
    loop = agent_loop.TeacherPrefixAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=student, tokenizer=tok,
                                             processor=None, dataset_cls=RLHFDataset,
                                             data_config=DictConfigWrap(cfg.data))
    width = loop.response_length
    assert width == run["train"]["max_new_tokens"]
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}
    sample = {"raw_prompt": [{"role": "user", "content": "1 + 2 = ?"}], "global_steps": 1, "index": 5,
              "data_source": "math"}
    method = plugin.run_method("tropd")
    lengths = {s: agent_loop.prefix_length(run, method, {**sample, "session_id": s}) for s in range(8)}
    assert len(set(lengths.values())) > 1 and all(0 <= n <= width for n in lengths.values())  # drawn per rollout
    session = next(s for s, n in lengths.items() if 0 < n < width)
    n = lengths[session]
    run_loop = loop.loop.run_until_complete  # the event loop verl's agent loop was made in
    out = run_loop(loop.run(dict(params), **sample, session_id=session))
    (t_prompt, t_max, t_temp), = teacher.calls
    (s_prompt, s_max, _), = student.calls
    assert t_max == n and t_temp == 1.0 and s_prompt == t_prompt + ([11, 12, 13, 14, 15] * 20)[:n]
    assert s_max == width - n  # the student continues up to the response length
    assert out.response_ids == (([11, 12, 13, 14, 15] * 20)[:n] + [21, 22, 23] * 30)[:width]
    assert out.extra_fields[agent_loop.PREFIX_LENGTH] == n and out.prompt_ids == t_prompt
    # the student's reply's extra fields are kept: verl tags the rollout with its weights' versions
    assert (out.extra_fields["min_global_steps"], out.extra_fields["max_global_steps"]) == (7, 7)
    # the step's maximum: annealed to 0 at the end, so the last step is on-policy
    assert agent_loop.prefix_length(run, method, {**sample, "global_steps": run["train"]["steps"] + 1,
                                                  "session_id": 0}) == 0
    # a prefix that ends the answer (eos) leaves the student nothing to write
    teacher.tokens, teacher.calls, student.calls = (lambda prompt: [11, eos, 12] * 40), [], []
    out = run_loop(loop.run(dict(params), **sample, session_id=next(s for s, m in lengths.items() if m >= 2)))
    assert student.calls == [] and out.response_ids == [11, eos] and out.extra_fields[agent_loop.PREFIX_LENGTH] == 2
    assert out.extra_fields["min_global_steps"] == out.extra_fields["max_global_steps"] == sample["global_steps"]
    # a teacher that stops short of the length (its own stop token) ended the answer too
    teacher.tokens, teacher.calls, student.calls = (lambda prompt: [11, 12]), [], []
    out = run_loop(loop.run(dict(params), **sample, session_id=next(s for s, m in lengths.items() if m >= 3)))
    assert student.calls == [] and out.response_ids == [11, 12]

"""The run's resolved config as verl's trainer overrides: composed with verl 0.9.1's own Hydra
config and converted through its own config classes and checks, so a key verl renames fails here."""
import json
import os
from types import SimpleNamespace

import pytest

from conftest import METHODS_DIR, REPO
from opdbench.config import compose_config, deep_update, load_yaml, resolve_run, validate_config
from opdbench.train.engines.verl.data import verl_rows
from opdbench.train.engines.verl.engine import teacher_weights
from opdbench.train.engines.verl.overrides import CONFIG_NAME, VerlResources, loss_name, verl_overrides
from opdbench.errors import ConfigError

TINY = load_yaml(REPO / "config" / "config.yaml")
# The paper-scale experiment file of REOPOLD's math setting (1.5B student, 7B teacher, one 8-GPU
# node), as the workflow composes it over the tiny default.
REOPOLD_MATH = REPO / "config" / "experiments" / "reopold_math.yaml"
PAPER = compose_config(TINY, [load_yaml(REOPOLD_MATH)])
PAPER_RESOURCES = VerlResources.from_settings(PAPER["base"]["verl"])
OPENR1_PROMPTS = 45_000  # about what Openr1-Math-46k-8192 holds (the dataloader must last all the steps)


def overrides(config, method="opd", resources=VerlResources(), n_prompts=4000, **kw):
    run = resolve_run(config, "math", method, 0, METHODS_DIR)
    return run, verl_overrides(run, student="/models/student", teacher="/models/teacher",
                               train_file="/data/train.parquet", n_prompts=n_prompts, max_prompt_length=kw.pop("plen", 96),
                               out_dir="/runs/opd/seed0", resources=resources, **kw)


def compose(args):
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"),
                               version_base=None):
        return hydra_compose(config_name=CONFIG_NAME, overrides=args)


def check_with_verls_classes(cfg, reference=False):
    """What verl's main_ppo does with the config before it starts Ray, and its config dataclasses."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.workers.config import DistillationConfig, RolloutConfig

    # a reference worker only for a method that needs reference log-probs; never a critic
    assert need_reference_policy(cfg) == reference and not need_critic(cfg)
    validate_config(cfg, use_reference_policy=reference, use_critic=False)
    distillation = omega_conf_to_dataclass(cfg.distillation)
    assert isinstance(distillation, DistillationConfig)
    assert isinstance(omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout), RolloutConfig)
    omega_conf_to_dataclass(cfg.algorithm)
    return distillation


@pytest.mark.parametrize("config, resources", [(TINY, VerlResources()), (PAPER, PAPER_RESOURCES)], ids=["tiny", "paper"])
@pytest.mark.parametrize("method", ["opd", "reopold", "exopd"])
def test_the_overrides_compose_with_verls_config_and_pass_its_checks(config, resources, method):
    run, args = overrides(config, method, resources)
    cfg = compose(args)
    distillation = check_with_verls_classes(cfg, reference=method == "exopd")
    train = run["train"]
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.data.train_batch_size == train["prompts_per_step"] and rollout.n == train["rollouts_per_prompt"]
    assert actor.ppo_mini_batch_size * rollout.n == train["mini_batch_size"]  # verl counts prompts
    assert actor.ppo_epochs == train["ppo_epochs"] and actor.optim.lr == train["lr"]
    assert cfg.data.max_response_length == train["max_new_tokens"] and rollout.temperature == train["temperature"]
    assert cfg.trainer.total_training_steps == train["steps"] and cfg.trainer.save_freq == train["checkpoint_every"]
    assert (cfg.trainer.n_gpus_per_node, cfg.trainer.nnodes) == (resources.student_gpus_per_node, resources.nnodes)
    assert distillation.enabled and distillation.distillation_loss.loss_mode == loss_name(method)
    assert not distillation.distillation_loss.use_policy_gradient and not distillation.distillation_loss.use_task_rewards
    (teacher,) = distillation.teacher_models.values()
    assert teacher.model_path == "/models/teacher" and teacher.world_size == resources.teacher_gpus_per_node
    assert list(cfg.trainer.logger) == ["console", "file"]


def test_the_reopold_math_file_states_the_papers_settings_and_verl_gets_them():
    """shared/seeds/000, Table 6 (1.5B math) and Appendix D, through the file into verl's config."""
    validate_config(PAPER, METHODS_DIR, jobs_run_here=False)
    math = PAPER["task_settings"]["math"]
    assert math["teacher"] == {"source": "Skywork/Skywork-OR1-Math-7B"}  # replaced, not merged with tiny's recipe
    assert math["student"] == {"source": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}
    assert sorted(math["data"]["benchmarks"]) == ["aime24", "aime25", "amc23", "math500", "minerva", "olympiad"]
    assert "generator" not in math["data"]["train"]
    assert PAPER["base"]["engine"] == "verl" and PAPER["methods"] == ["opd", "reopold", "exopd"]
    evaluation = PAPER["evaluation"]
    assert (evaluation["temperature"], evaluation["top_p"], evaluation["max_new_tokens"]) == (0.6, 0.95, 32768)
    for method in PAPER["methods"]:
        run, args = overrides(PAPER, method, PAPER_RESOURCES, n_prompts=OPENR1_PROMPTS, plen=1024)
        cfg = compose(args)
        check_with_verls_classes(cfg, reference=method == "exopd")
        actor, rollout, optim = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.actor.optim
        assert cfg.trainer.total_training_steps == 300 and optim.lr == 1.0e-5
        assert (optim.lr_scheduler_type, optim.lr_warmup_steps) == ("constant", 0)
        assert cfg.data.train_batch_size == 128 and rollout.n == 8
        assert actor.ppo_mini_batch_size == 32  # prompts: 4 gradient updates per rollout step
        assert cfg.data.train_batch_size // actor.ppo_mini_batch_size == 4
        assert cfg.data.max_response_length == 8192 and rollout.temperature == 1.0
        assert actor.fsdp_config.model_dtype == "bf16" and rollout.dtype == "bfloat16"
        assert rollout.max_model_len == 1024 + 8192 + 1
        assert cfg.trainer.n_gpus_per_node + cfg.distillation.n_gpus_per_node == 8 and cfg.trainer.nnodes == 1
        assert cfg.trainer.total_epochs * (OPENR1_PROMPTS // 128) >= 300  # the dataloader lasts all the steps
        if method == "reopold":  # Table 6: lambda 0.3, beta 0.2, T_switch 100 of 300
            hp = run["hparams"]
            assert (hp["lam"], hp["beta"], round(hp["t_switch"] * 300)) == (0.3, 0.2, 100)


def test_a_warmup_is_kept_in_steps_when_a_step_is_one_update():
    # one optimizer update per step (1024 rollouts = 128 prompts x 8): the warmup is in steps either way
    config = deep_update(PAPER, {"base": {"mini_batch_size": 1024, "lr_schedule": "constant_with_warmup",
                                          "warmup_steps": 10}})
    _, args = overrides(config, resources=PAPER_RESOURCES)
    optim = compose(args).actor_rollout_ref.actor.optim
    assert (optim.lr_scheduler_type, optim.lr_warmup_steps) == ("constant", 10)


def test_a_key_verl_does_not_have_fails_the_composition():
    _, args = overrides(TINY)
    renamed = [a.replace("actor_rollout_ref.actor.ppo_mini_batch_size", "actor_rollout_ref.actor.mini_batch_size")
               for a in args]
    with pytest.raises(Exception, match="mini_batch_size"):
        compose(renamed)


@pytest.mark.parametrize("base, message", [
    ({"lr_schedule": "linear"}, "'linear' is not in verl"),
    ({"mini_batch_size": 6, "prompts_per_step": 3, "rollouts_per_prompt": 4}, "multiple of rollouts_per_prompt"),
    ({"lr_schedule": "cosine", "mini_batch_size": 32}, "once per training step"),
    ({"lr_schedule": "constant_with_warmup", "warmup_steps": 4, "mini_batch_size": 32}, "once per training step"),
])
def test_what_verl_cannot_reproduce_is_refused_naming_the_key(base, message):
    with pytest.raises(ConfigError, match=message):
        overrides(deep_update(TINY, {"base": base}))


def test_the_constant_schedule_keeps_no_warmup_and_resources_are_checked():
    _, args = overrides(deep_update(TINY, {"base": {"warmup_steps": 5, "mini_batch_size": 32}}))
    assert "actor_rollout_ref.actor.optim.lr_warmup_steps=0" in args  # transformers' "constant" has none
    with pytest.raises(ConfigError, match="base.verl.teacher_tp"):
        VerlResources.from_settings({"teacher_gpus_per_node": 3, "teacher_tp": 2})
    with pytest.raises(ConfigError, match="unknown config key 'base.verl.gpus'"):
        VerlResources.from_settings({"gpus": 2})
    with pytest.raises(ConfigError, match="student GPUs"):
        overrides(TINY, resources=VerlResources(student_gpus_per_node=3))


def test_exopds_reference_is_verls_reference_worker_on_the_initial_student_at_temperature_1():
    _, args = overrides(TINY, "exopd")
    cfg = compose(args)
    actor = cfg.actor_rollout_ref.actor
    assert actor.use_kl_loss and actor.kl_loss_coef == 0.0  # starts the worker; the loss never computes it
    assert cfg.actor_rollout_ref.model.path == "/models/student"  # what the reference worker loads
    assert cfg.actor_rollout_ref.ref.fsdp_config.model_dtype == actor.fsdp_config.model_dtype
    with pytest.raises(ConfigError, match="method_settings.exopd.reference"):
        overrides(deep_update(TINY, {"method_settings": {"exopd": {"reference": "org/base-model"}}}), "exopd")
    with pytest.raises(ConfigError, match="'base.temperature' \\(0.7\\)"):
        overrides(deep_update(TINY, {"base": {"temperature": 0.7}}), "exopd")
    overrides(deep_update(TINY, {"base": {"temperature": 0.7}}), "opd")  # no reference: any temperature


# --- A teacher per domain (a mixed task's multi-teacher model, opdbench.models.teacher_refs) ---

def multi_teacher(tmp_path, domains=("math", "code")):
    """A multi-teacher model directory: model.json lists a subdirectory per domain, each a model of
    its own (weights elsewhere: the overrides need only the paths)."""
    root = tmp_path / "teachers"
    for domain in domains:
        (root / domain).mkdir(parents=True)
        (root / domain / "model.json").write_text(json.dumps({"weights": f"/models/{domain}-teacher"}))
    (root / "model.json").write_text(json.dumps({"weights": ".", "teachers": {d: d for d in domains}}))
    return root


def teacher_overrides(teacher_ref, resources, config=TINY):
    """The overrides as VerlEngine builds them for a teacher reference."""
    run = resolve_run(config, "math", "opd", 0, METHODS_DIR)
    return verl_overrides(run, student="/models/student", teacher=teacher_weights(str(teacher_ref)),
                          train_file="/data/train.parquet", n_prompts=4000, max_prompt_length=96,
                          out_dir="/runs/opd/seed0", resources=resources)


MULTI = [VerlResources(teacher_gpus_per_node=2), PAPER_RESOURCES,  # 4 teacher GPUs: 2 replicas each
         VerlResources(nnodes=2, student_gpus_per_node=2, teacher_gpus_per_node=2, rollout_tp=2, teacher_tp=2)]


@pytest.mark.parametrize("resources", MULTI, ids=["tiny", "paper", "2-nodes-tp2"])
def test_a_teacher_per_domain_is_a_verl_teacher_each_keyed_by_its_data_source(tmp_path, resources):
    cfg = compose(teacher_overrides(multi_teacher(tmp_path), resources))
    distillation = check_with_verls_classes(cfg)
    assert distillation.teacher_key == cfg.distillation.teacher_key == "data_source"
    assert sorted(cfg.distillation.teacher_models) == ["teacher_code", "teacher_math", "teacher_model"]
    # verl drops its default entry and keys the teachers by their routing key (no "default" teacher)
    assert list(distillation.teacher_models) == ["math", "code"]
    pool = resources.teacher_gpus_per_node * resources.nnodes
    for domain, teacher in distillation.teacher_models.items():
        assert (teacher.key, teacher.model_path) == (domain, f"/models/{domain}-teacher")
        assert teacher.inference.tensor_model_parallel_size == resources.teacher_tp
        assert teacher.world_size == pool // 2 and teacher.num_replicas == pool // 2 // resources.teacher_tp
    # each domain's teacher is served as the single teacher is (the default entry's settings)
    (single,) = check_with_verls_classes(compose(teacher_overrides("/models/math-teacher", resources))
                                         ).teacher_models.values()
    for teacher in distillation.teacher_models.values():
        assert teacher.inference == single.inference


def test_verl_routes_a_code_prompt_to_the_code_teacher(tmp_path):
    """verl's own routing (the agent loop's worker and its teacher client manager, with fake vLLM
    clients) from the data_source that data.verl_rows writes for a mixed task's code row."""
    import asyncio

    import numpy as np
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, AgentLoopWorker
    from verl.experimental.teacher_loop.teacher_manager import AsyncTeacherLLMServerManager

    cfg = compose(teacher_overrides(multi_teacher(tmp_path), VerlResources(teacher_gpus_per_node=2)))

    class Client:  # what an LLMServerClient answers for the teacher's prompt log-probs
        def __init__(self):
            self.calls = []

        async def generate(self, request_id, prompt_ids, sampling_params, **kw):
            self.calls.append(prompt_ids)
            return SimpleNamespace(extra_fields={"prompt_ids": prompt_ids, "prompt_logprobs": [[-0.5]] * len(prompt_ids)})

    clients = {"math": Client(), "code": Client()}
    manager = AsyncTeacherLLMServerManager(cfg, clients)
    assert manager.teacher_key == "data_source"
    code_row = {"domain": "code", "id": 3, "problem": "p"}
    task = SimpleNamespace(name="mixed", messages=lambda row: [{"role": "user", "content": row["problem"]}])
    (written,) = verl_rows(task, [code_row])
    key = manager._resolve_teacher_key(written["data_source"])
    assert key == "code" and manager.teacher_model_configs[key].model_path == "/models/code-teacher"
    with pytest.raises(ValueError, match="No teacher configured for routing key 'science'"):
        manager._resolve_teacher_key("science")
    # the agent loop's step: the sample's non-tensor data_source (a numpy object) picks the client
    worker = SimpleNamespace(distillation_enabled=True, teacher_key=cfg.distillation.teacher_key,
                             teacher_server_manager=manager)
    output = AgentLoopOutput(prompt_ids=[1, 2], response_ids=[3], response_mask=[1], metrics={})
    sample = {"data_source": np.array([written["data_source"]], dtype=object)[0]}
    asyncio.run(AgentLoopWorker._compute_teacher_logprobs(worker, output, [1, 2], [3], validate=False,
                                                          sample_kwargs=sample))
    assert clients["code"].calls == [[1, 2, 3]] and clients["math"].calls == []
    assert output.extra_fields["teacher_logprobs"].shape == (3, 1)


def test_a_single_teacher_keeps_verls_default_entry(tmp_path):
    """A single model (a model directory or a path) gives the overrides it always gave: verl's
    default entry, which verl gives the whole pool and every sample."""
    single = tmp_path / "teacher"
    single.mkdir()
    (single / "model.json").write_text(json.dumps({"weights": "/models/teacher"}))
    assert teacher_weights(str(single)) == "/models/teacher"
    args = teacher_overrides(single, PAPER_RESOURCES)
    assert args == teacher_overrides("/models/teacher", PAPER_RESOURCES)
    assert [a for a in args if "teacher" in a.split("=")[0]] == [
        "distillation.teacher_models.teacher_model.model_path=/models/teacher",
        "distillation.teacher_models.teacher_model.inference.name=vllm",
        "distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size=1",
        "distillation.teacher_models.teacher_model.inference.gpu_memory_utilization=0.5",
        f"distillation.teacher_models.teacher_model.inference.max_model_len={96 + TINY['base']['max_new_tokens'] + 1}",
    ]
    (teacher,) = check_with_verls_classes(compose(args)).teacher_models.values()
    assert (teacher.key, teacher.num_replicas) == ("default", 4)


def test_a_teacher_pool_that_does_not_split_evenly_between_the_domains_is_refused(tmp_path):
    three = multi_teacher(tmp_path, ("math", "code", "science"))
    with pytest.raises(ConfigError, match=r"'base.verl.teacher_gpus_per_node' \(4\): the teacher pool of 1 node\(s\) "
                                          r"x 4 GPUs holds 4 replicas of teacher_tp 1 GPU\(s\), which cannot be split "
                                          r"evenly between the 3 domain teachers \(math, code, science\).* e.g. 3 or 6"):
        teacher_overrides(three, PAPER_RESOURCES)
    with pytest.raises(ConfigError, match=r"\(2\).*2 node\(s\) x 2 GPUs holds 2 replicas of teacher_tp 2.* e.g. 6"):
        teacher_overrides(three, MULTI[2])
    with pytest.raises(ConfigError, match=r"\(1\).*1 replicas.*the 2 domain teachers.* e.g. 2"):
        teacher_overrides(multi_teacher(tmp_path / "two"), VerlResources())  # fewer replicas than domains
    # the suggested size splits: 2 replicas each, which verl's checks accept
    cfg = compose(teacher_overrides(three, VerlResources(student_gpus_per_node=4, teacher_gpus_per_node=6)))
    assert [t.num_replicas for t in check_with_verls_classes(cfg).teacher_models.values()] == [2, 2, 2]

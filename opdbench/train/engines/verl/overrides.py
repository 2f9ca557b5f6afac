"""A run's resolved config (``opdbench.config.resolve_run``) as verl 0.9.1 Hydra overrides of its
PPO trainer config (``verl/trainer/config/ppo_trainer.yaml``, which includes ``distillation``).

Units differ between the suite and verl, and the conversions are exact or refused:
- batch: the suite counts rollouts (``mini_batch_size``), verl counts prompts
  (``ppo_mini_batch_size``, multiplied by ``rollout.n`` in its workers);
- the LR schedule: the suite steps its scheduler once per optimizer update, verl once per
  training step, so a schedule that changes within a step (warmup or cosine with several
  updates per step) cannot be reproduced and is refused; ``linear`` is not in verl's FSDP engine;
- the loss: the method's own loss is registered with verl (``plugin``) under ``loss_name``; verl
  backpropagates it (``use_policy_gradient: false``) without task rewards, clamps or a KL term;
  the method's terms are aggregated with the run's ``loss_agg_mode`` over the global batch by the
  plugin, so verl's own aggregation is ``token-sum``;
- the teacher: one model in verl's default teacher entry, or (a mixed task's multi-teacher model)
  one entry per domain, keyed by the domain that each row carries as ``data_source``, the teacher
  pool split evenly between them or refused.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError

TRAINER_MODE = "opdbench"  # the registered trainer (trainer.py)
# The agent-loop manager whose workers also keep the teacher's sampled-token log-probs in a top-k run
# (agent_loop.py, which imports verl and Ray: named here, imported by verl's processes only)
TOPK_AGENT_LOOP_MANAGER = "opdbench.train.engines.verl.agent_loop.TeacherTokenManager"
PREFIX_AGENT_LOOP = "opdbench_teacher_prefix"  # the agent loop that lets the teacher write a prefix

# verl's trainer module and its Hydra config (the same name the launch and the tests use).
TRAINER_MODULE = "verl.trainer.main_ppo"
CONFIG_NAME = "ppo_trainer"
LOSS_PREFIX = "opdbench_"
DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # the suite's -> verl's FSDP names
ROLLOUT_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}  # vLLM's


def loss_name(method: str) -> str:
    """The name the method's loss is registered under with verl (distillation_loss.loss_mode)."""
    return f"{LOSS_PREFIX}{method}"


@dataclass(frozen=True)
class VerlResources:
    """Where a run trains: the student (FSDP actor and its vLLM rollout) and the teacher (vLLM,
    verl's separate teacher pool) on ``nnodes`` nodes, GPUs per node for each."""
    nnodes: int = 1
    student_gpus_per_node: int = 1
    teacher_gpus_per_node: int = 1
    rollout_tp: int = 1  # tensor parallel size of one student vLLM replica
    teacher_tp: int = 1  # of one teacher replica; the teacher pool holds whole replicas
    gpu_memory_utilization: float = 0.5  # vLLM's share of a GPU, student and teacher

    @property
    def gpus_per_node(self) -> int:
        return self.student_gpus_per_node + self.teacher_gpus_per_node

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None, where: str = "base.verl") -> "VerlResources":
        settings = dict(settings or {})
        valid = [f.name for f in fields(cls)]
        for key, value in settings.items():
            if key not in valid:
                raise ConfigError(f"unknown config key '{where}.{key}'. Valid keys here: {', '.join(valid)}")
            ok = 0 < value <= 1 if key == "gpu_memory_utilization" else isinstance(value, int) and value >= 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
                raise ConfigError(f"config key '{where}.{key}': {value!r} is not "
                                  f"{'a fraction in (0, 1]' if key == 'gpu_memory_utilization' else 'a positive integer'}")
        res = cls(**settings)
        if res.student_gpus_per_node % res.rollout_tp:
            raise ConfigError(f"config key '{where}.rollout_tp' ({res.rollout_tp}) must divide "
                              f"student_gpus_per_node ({res.student_gpus_per_node})")
        if res.teacher_gpus_per_node % res.teacher_tp:
            raise ConfigError(f"config key '{where}.teacher_tp' ({res.teacher_tp}) must divide "
                              f"teacher_gpus_per_node ({res.teacher_gpus_per_node})")
        return res


def _lr_schedule(train: dict[str, Any], updates_per_step: int) -> list[str]:
    schedule, warmup = train["lr_schedule"], train["warmup_steps"]
    if schedule == "linear":
        raise ConfigError("config key 'base.lr_schedule': 'linear' is not in verl 0.9.1's FSDP engine; "
                          "valid on the verl engine: constant, constant_with_warmup, cosine")
    # transformers' "constant" has no warmup; verl's "constant" is constant with warmup.
    warmup = 0 if schedule == "constant" else warmup
    if updates_per_step > 1 and (warmup or schedule == "cosine"):
        raise ConfigError(f"config key 'base.lr_schedule': verl steps the LR schedule once per training step, "
                          f"the suite once per optimizer update ({updates_per_step} per step here), so "
                          f"'{schedule}' with warmup_steps={train['warmup_steps']} would change; use one update "
                          f"per step (mini_batch_size = prompts_per_step * rollouts_per_prompt, ppo_epochs 1) "
                          f"or a constant schedule without warmup")
    return [f"actor_rollout_ref.actor.optim.lr_scheduler_type={'cosine' if schedule == 'cosine' else 'constant'}",
            f"actor_rollout_ref.actor.optim.lr_warmup_steps={warmup}",
            "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0",
            "actor_rollout_ref.actor.optim.min_lr_ratio=0.0",  # transformers' cosine decays to 0
            "actor_rollout_ref.actor.optim.num_cycles=0.5"]


def _reference(run: dict[str, Any], needs: frozenset[str], max_len: int) -> list[str]:
    """verl's reference worker for a method that needs reference log-probs (ExOPD): verl starts it
    only with a KL term configured (``need_reference_policy``); the term's coefficient is 0 and,
    with ``use_policy_gradient: false``, verl never computes it. The worker loads the student's
    initial weights (``actor_rollout_ref.model.path``) and scores at the rollout temperature, so
    the reference is exact for a reference of the initial student at temperature 1 only."""
    if "ref_logprobs" not in needs:
        return ["actor_rollout_ref.actor.use_kl_loss=False"]
    train, hp = run["train"], run["hparams"]
    if hp.get("reference", "student") != "student":
        raise ConfigError(f"config key 'method_settings.{run['method']}.reference' ('{hp['reference']}'): verl 0.9.1's "
                          f"reference worker loads the student's initial weights only; a reference of another "
                          f"model trains on the local engine (base.engine: local)")
    if train["temperature"] != 1.0:
        raise ConfigError(f"config key 'base.temperature' ({train['temperature']}): verl 0.9.1 scores the reference "
                          f"at the rollout temperature, method '{run['method']}' at temperature 1 (as the teacher); "
                          f"use temperature 1.0 or base.engine: local")
    return ["actor_rollout_ref.actor.use_kl_loss=True",
            "actor_rollout_ref.actor.kl_loss_coef=0.0",
            f"actor_rollout_ref.ref.fsdp_config.model_dtype={DTYPES[train['dtype']]}",  # as the student's old log-probs
            "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
            f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={max(16384, max_len)}"]


def _topk(run: dict[str, Any], needs: frozenset[str]) -> list[str]:
    """Top-k teacher log-probs (need ``teacher_topk``: EOPD, TrOPD): verl's top-k mode with the
    method's k (the method's loss is registered with ``use_topk``, so verl's teacher loop asks vLLM
    for the top-k and the student's forward computes verl's top-k forward KL, ``StudentOutput.topk_fkl``),
    and the agent-loop manager whose workers also ask for the sampled tokens' log-probs (``logT``);
    with teacher prefixes (TrOPD's guidance) its agent loop, which asks the teacher first."""
    if "teacher_prefix" in needs and "teacher_topk" not in needs:
        raise ConfigError(f"method '{run['method']}': teacher prefixes on verl come with the top-k agent-loop "
                          f"workers (agent_loop.py); a method needing teacher_prefix without teacher_topk has none")
    if "teacher_topk" not in needs:
        return []
    prefix = [f"actor_rollout_ref.rollout.agent.default_agent_loop={PREFIX_AGENT_LOOP}"] if "teacher_prefix" in needs else []
    return [*prefix, f"distillation.distillation_loss.topk={run['hparams']['k']}",
            # a key of verl's AgentLoopConfig that its yaml lacks: added
            f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={TOPK_AGENT_LOOP_MANAGER}"]


# verl's single-teacher entry: it takes the whole teacher pool (verl sets its replicas) and every sample.
TEACHER_ENTRY = "distillation.teacher_models.teacher_model"
TEACHER_MODELS = "distillation.teacher_models"
# What verl 0.9.1's default entry (distillation.yaml, teacher_models.teacher_model) holds besides the
# settings the suite sets (_teacher_inference). An entry added for a domain starts empty (verl's
# dataclass defaults differ: enforce_eager, max_num_seqs, prompt_length, ...), so it gets these and each
# domain's teacher is served as the single teacher is (tests/test_verl_overrides.py compares them).
TEACHER_INFERENCE_DEFAULTS = (
    ("_target_", "verl.workers.config.RolloutConfig"),
    ("dtype", "${oc.select:actor_rollout_ref.rollout.dtype}"),
    ("enforce_eager", "true"),
    ("cudagraph_capture_sizes", "null"),
    ("free_cache_engine", "true"),
    ("data_parallel_size", "1"),
    ("expert_parallel_size", "1"),
    ("max_num_batched_tokens", "8192"),
    ("max_num_seqs", "1024"),
    ("load_format", "auto"),
    ("engine_kwargs", "{}"),
    ("limit_images", "null"),
    ("enable_chunked_prefill", "true"),
    ("enable_prefix_caching", "true"),
    ("disable_log_stats", "true"),
    ("skip_tokenizer_init", "true"),
    ("prompt_length", "${oc.select:actor_rollout_ref.rollout.prompt_length}"),
    ("response_length", "${oc.select:actor_rollout_ref.rollout.response_length}"),
    ("temperature", "${oc.select:actor_rollout_ref.rollout.temperature}"),
)
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_]+")  # part of a Hydra key (teacher_<domain>)


def teacher_entry(domain: str) -> str:
    """The name of a domain's teacher in ``distillation.teacher_models`` (not verl's ``teacher_model``,
    which verl drops as soon as another entry is added)."""
    return f"teacher_{domain}"


def teacher_replicas(resources: VerlResources, domains: list[str]) -> int:
    """Replicas (of ``teacher_tp`` GPUs each) of every domain's teacher: the teacher pool split evenly.

    verl 0.9.1 (DistillationConfig) needs each teacher's ``num_replicas * tensor_model_parallel_size``
    summed over the teachers to equal the pool (``distillation.n_gpus_per_node * nnodes``), each
    teacher with whole replicas; it would take an uneven split (4 GPUs, 3 teachers: 2 + 1 + 1), the
    suite gives every domain the same share and refuses a pool it cannot split so."""
    if not domains:
        raise ConfigError("the teacher's model.json lists no teachers (an empty 'teachers'): a teacher per domain "
                          "needs at least one domain")
    tp, per_node, nnodes, k = resources.teacher_tp, resources.teacher_gpus_per_node, resources.nnodes, len(domains)
    pool = nnodes * per_node // tp  # whole replicas: from_settings checked teacher_tp | teacher_gpus_per_node
    if pool % k == 0:
        return pool // k
    step = tp * (k // math.gcd(nnodes, k))  # the teacher_gpus_per_node values that split evenly: its multiples
    fits = sorted({step * (per_node // step), step * -(-per_node // step)} - {0})
    raise ConfigError(f"config key 'base.verl.teacher_gpus_per_node' ({per_node}): the teacher pool of {nnodes} "
                      f"node(s) x {per_node} GPUs holds {pool} replicas of teacher_tp {tp} GPU(s), which cannot be "
                      f"split evenly between the {k} domain teachers ({', '.join(domains)}): verl 0.9.1 gives each "
                      f"teacher whole replicas filling the pool, the suite the same number to each domain; use a "
                      f"teacher_gpus_per_node for which nnodes x teacher_gpus_per_node / teacher_tp is a multiple "
                      f"of {k}, e.g. {' or '.join(map(str, fits))}")


def _teacher_inference(entry: str, resources: VerlResources, max_len: int) -> list[str]:
    return [f"{entry}.inference.name=vllm",
            f"{entry}.inference.tensor_model_parallel_size={resources.teacher_tp}",
            f"{entry}.inference.gpu_memory_utilization={resources.gpu_memory_utilization}",
            f"{entry}.inference.max_model_len={max_len + 1}"]


def _teachers(teacher: str | Path | dict[str, str | Path], resources: VerlResources, max_len: int) -> list[str]:
    """The teacher overrides: one teacher in verl's default entry; or, for a teacher per domain, one
    entry each (``teacher_<domain>``, ``key``: the domain, the ``data_source`` that ``data.verl_rows``
    writes and verl routes a sample by, ``distillation.teacher_key``), the pool split evenly
    (``teacher_replicas``). verl then drops its default entry."""
    if not isinstance(teacher, dict):
        return [f"{TEACHER_ENTRY}.model_path={teacher}", *_teacher_inference(TEACHER_ENTRY, resources, max_len)]
    bad = [d for d in teacher if not DOMAIN_NAME.fullmatch(d)]
    if bad:
        raise ConfigError(f"teacher domains {bad}: a domain's teacher is a verl config key, teacher_<domain>; "
                          f"use letters, digits and '_'")
    replicas = teacher_replicas(resources, list(teacher))
    lines = ["distillation.teacher_key=data_source"]  # verl's default, stated: data.verl_rows writes the domain there
    for domain, path in teacher.items():
        entry = f"+{TEACHER_MODELS}.{teacher_entry(domain)}"
        lines += [f"{entry}._target_=verl.workers.config.DistillationTeacherModelConfig",
                  f"{entry}.key='{domain}'",  # quoted: a string for Hydra whatever the name
                  f"{entry}.model_path={path}",
                  f"{entry}.num_replicas={replicas}",
                  *(f"{entry}.inference.{key}={value}" for key, value in TEACHER_INFERENCE_DEFAULTS),
                  *_teacher_inference(entry, resources, max_len)]
    return lines


def method_needs(run: dict[str, Any]) -> frozenset[str]:
    """What the run needs from scoring (its method's ``needs_of`` its hyperparameters)."""
    from opdbench.train.engines.verl.launch import methods_dir
    from opdbench.registry import get_method_class

    cls = get_method_class(run["method"], methods_dir())
    return frozenset(cls.needs_of(cls.resolve_hparams(run["hparams"])))


def verl_overrides(run: dict[str, Any], *, student: str | Path, teacher: str | Path | dict[str, str | Path],
                   train_file: str | Path, n_prompts: int, max_prompt_length: int, out_dir: str | Path,
                   resources: VerlResources = VerlResources(), logger: tuple[str, ...] = ("console", "file"),
                   needs: frozenset[str] | None = None) -> list[str]:
    """Hydra overrides (``key=value``) of verl's ``ppo_trainer`` config for one resolved run.

    ``teacher``: the teacher's weights, or domain -> weights for a teacher per domain (a mixed task's
    multi-teacher model, ``models.teacher_refs``; ``_teachers``); ``n_prompts``: rows of the train
    parquet; ``max_prompt_length``: the longest encoded prompt (verl refuses longer ones instead of
    truncating them); ``needs``: the method's (default: its method file's)."""
    train, method = run["train"], run["method"]
    n, per_step = train["rollouts_per_prompt"], train["prompts_per_step"]
    if train["mini_batch_size"] % n:
        raise ConfigError(f"config key 'base.mini_batch_size' ({train['mini_batch_size']}): verl counts mini-batches "
                          f"in prompts, so it must be a multiple of rollouts_per_prompt ({n})")
    if train["dtype"] not in DTYPES:
        raise ConfigError(f"config key 'base.dtype': '{train['dtype']}'; valid: {', '.join(DTYPES)}")
    if per_step > n_prompts:
        raise ConfigError(f"config key 'base.prompts_per_step' ({per_step}) exceeds the {n_prompts} train prompts")
    student_gpus = resources.student_gpus_per_node * resources.nnodes
    if (per_step * n) % student_gpus or (train["mini_batch_size"] // n) % student_gpus:
        raise ConfigError(f"config key 'base.mini_batch_size': verl splits each mini-batch of prompts over the "
                          f"{student_gpus} student GPUs; prompts_per_step * rollouts_per_prompt ({per_step * n}) "
                          f"and mini_batch_size / rollouts_per_prompt ({train['mini_batch_size'] // n}) must be "
                          f"multiples of it")
    updates_per_step = train["ppo_epochs"] * (per_step * n // train["mini_batch_size"])
    # verl's dataloader drops the last partial batch; enough epochs that it never runs out of steps.
    epochs = math.ceil(train["steps"] / (n_prompts // per_step))
    max_len = max_prompt_length + train["max_new_tokens"]
    out_dir = Path(out_dir)
    seed = run["seed"]
    needs = method_needs(run) if needs is None else needs
    return [
        # data: the task's parquet; validation is off (the suite evaluates the saved model itself)
        f"data.train_files=['{train_file}']",
        f"data.val_files=['{train_file}']",
        f"data.train_batch_size={per_step}",
        f"data.max_prompt_length={max_prompt_length}",
        f"data.max_response_length={train['max_new_tokens']}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        "data.shuffle=True",
        f"data.seed={seed}",
        "data.dataloader_num_workers=0",
        # advantages are unused (the loss is the method's); grpo needs no critic
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        "critic.enable=False",
        # the student
        f"actor_rollout_ref.model.path={student}",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        f"actor_rollout_ref.actor.fsdp_config.model_dtype={DTYPES[train['dtype']]}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={train['mini_batch_size'] // n}",
        f"actor_rollout_ref.actor.ppo_epochs={train['ppo_epochs']}",
        # mini-batches as contiguous rows, so the loss terms' global normalisers can be counted
        # for them before the update (plugin.minibatch_rows, prepare_update)
        "actor_rollout_ref.actor.shuffle=False",
        f"actor_rollout_ref.actor.data_loader_seed={seed}",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={max(16384, max_len)}",
        # the method's terms carry the run's loss_agg_mode and are pre-divided by their global
        # normalisers (plugin.verl_per_token), so verl only sums them
        "actor_rollout_ref.actor.loss_agg_mode=token-sum",
        f"actor_rollout_ref.actor.clip_ratio_low={train['clip_ratio_low']}",
        f"actor_rollout_ref.actor.clip_ratio_high={train['clip_ratio_high']}",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.calculate_entropy=True",  # the suite logs the student's entropy
        *_reference(run, needs, max_len),
        f"actor_rollout_ref.actor.grad_clip={train['grad_clip']}",
        "actor_rollout_ref.actor.optim.optimizer=AdamW",
        f"actor_rollout_ref.actor.optim.lr={train['lr']}",
        f"actor_rollout_ref.actor.optim.weight_decay={train['weight_decay']}",
        f"actor_rollout_ref.actor.optim.betas=[{train['adam_betas'][0]},{train['adam_betas'][1]}]",
        *_lr_schedule(train, updates_per_step),
        # the student's rollout
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={n}",
        f"actor_rollout_ref.rollout.temperature={train['temperature']}",
        f"actor_rollout_ref.rollout.top_p={train['top_p']}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"actor_rollout_ref.rollout.dtype={ROLLOUT_DTYPES[train['dtype']]}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={resources.rollout_tp}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={resources.gpu_memory_utilization}",
        f"actor_rollout_ref.rollout.max_model_len={max_len + 1}",
        # on-policy distillation: the teacher (or each domain's) in verl's teacher pool, the loss the method's
        "distillation.enabled=True",
        f"distillation.n_gpus_per_node={resources.teacher_gpus_per_node}",
        f"distillation.nnodes={resources.nnodes}",
        *_teachers(teacher, resources, max_len),
        f"distillation.distillation_loss.loss_mode={loss_name(method)}",
        "distillation.distillation_loss.use_task_rewards=False",
        "distillation.distillation_loss.use_policy_gradient=False",
        "distillation.distillation_loss.loss_max_clamp=null",
        "distillation.distillation_loss.log_prob_min_clamp=null",
        *_topk(run, needs),
        # verl's reward loop runs even without task rewards: the suite's task scores (train_accuracy)
        f"reward.custom_reward_function.path={Path(__file__).with_name('reward.py')}",
        "reward.custom_reward_function.name=compute_score",
        # the trainer
        f"trainer.n_gpus_per_node={resources.student_gpus_per_node}",
        f"trainer.nnodes={resources.nnodes}",
        f"trainer.total_training_steps={train['steps']}",
        f"trainer.total_epochs={epochs}",
        f"trainer.save_freq={train['checkpoint_every']}",
        "trainer.test_freq=-1",
        "trainer.val_before_train=False",
        "trainer.resume_mode=auto",
        # verl's synchronous trainer with the method's batch preparation before each update (trainer.py)
        f"trainer.v1.trainer_mode={TRAINER_MODE}",
        f"trainer.default_local_dir={out_dir / 'verl_checkpoints'}",
        "trainer.project_name=opdbench",
        f"trainer.experiment_name={run['task']}-{run['run_name']}-seed{seed}",
        f"trainer.logger=[{','.join(logger)}]",
    ]

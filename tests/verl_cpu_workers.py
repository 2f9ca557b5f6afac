"""Run by tests/test_verl_workers.py in a process of its own: verl 0.9.1's own workers on CPU (a
test-only shim, ENVIRONMENT.md "verl on CPU") score a rollout batch and train on it with the suite's
OPD loss through the plugin and the registered trainer's batch preparation; the same batch through
the local engine's loss (fp32 HF forwards, ``Method.loss``, ``losses.batch_loss``, AdamW with
verl's optimizer settings). Prints one JSON object: each mini-batch's loss and gradient norm from
verl and from the local engine, and the local losses had the student not been updated.

    python tests/verl_cpu_workers.py <work dir> [opd | eopd]

``eopd`` (entropy: topk) trains in verl's top-k mode: the teacher's top-k per sequence position
(``teacher_ids`` / ``teacher_logprobs``) and its sampled-token log-probs in the agent loop's extra
fields, verl's forward computing its top-k forward KL (the logits processor) beside the student's
log-probs (``distillation_only`` off, as the registered trainer sets it).
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch

# -- the shim: a cpu platform for verl, FSDP2 over gloo in this one process ---------------------
os.environ.update(VERL_PLATFORM="cpu", VERL_ENGINE_DEVICE="cuda",  # "cuda" selects the FSDP engine; it runs on CPU
                  RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT="0")
from verl.plugin.platform.platform_base import PlatformBase  # noqa: E402
from verl.plugin.platform.platform_manager import PlatformRegistry  # noqa: E402


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    device_name, vendor_name, device_module = "cpu", "cpu", torch.cpu

    def is_available(self): return True
    def is_platform_available(self, use_smi_check=False): return True
    def current_device(self): return "cpu"  # verl moves modules .to(get_device_id()); 0 would mean cuda:0
    def device_count(self): return 1
    def set_device(self, device_index): pass
    def synchronize(self, device_index=None): pass
    def manual_seed(self, seed): torch.manual_seed(seed)
    def manual_seed_all(self, seed): torch.manual_seed(seed)
    def set_allocator_settings(self, settings): pass
    def empty_cache(self): pass
    def get_device_capability(self, device_index=0): return None, None
    def communication_backend_name(self): return "gloo"
    def visible_devices_envvar(self): return "CUDA_VISIBLE_DEVICES"
    def profiler_start(self): pass
    def profiler_stop(self): pass
    def ray_resource_name(self): return "CPU"
    def ray_noset_envvars(self): return []
    def is_ipc_supported(self): return False
    def cudart(self): return None

    @contextmanager
    def nvtx_range(self, msg):
        yield


# what verl's memory logging asks torch.cpu for
for _name, _value in {"memory_reserved": 0, "memory_allocated": 0, "max_memory_allocated": 0,
                      "max_memory_reserved": 0, "get_device_name": "cpu", "set_rng_state": None,
                      "reset_peak_memory_stats": None, "mem_get_info": (0, 0)}.items():
    if not hasattr(torch.cpu, _name):
        setattr(torch.cpu, _name, lambda *a, _v=_value, **k: _v)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import METHODS_DIR, REPO, tiny  # noqa: E402

from opdbench.config import load_yaml, resolve_run  # noqa: E402
from opdbench.train.losses import batch_loss  # noqa: E402
from opdbench.train.engines.verl import launch, plugin, trainer  # noqa: E402
from opdbench.train.engines.verl.overrides import loss_name  # noqa: E402
from opdbench.method import Progress, ScoredBatch, StudentOutput  # noqa: E402
from opdbench.registry import get_method_class  # noqa: E402
from opdbench.train.rollout import Sequences  # noqa: E402

B, P, R, MINI = 4, 4, 5, 2  # rollouts, prompt and response widths, rollouts per mini-batch
K = 4  # the teacher's top-k in the top-k run
HPARAMS = {"opd": {}, "eopd": {"entropy": "topk", "k": K}}
PROMPT_LENS, RESPONSE_LENS = [4, 3, 4, 2], [5, 3, 4, 2]


def models(work: Path) -> tuple[Path, Path]:
    """A tiny Qwen2 student and a teacher: the student with its weights perturbed."""
    import transformers

    student, teacher = work / "student", work / "teacher"
    tok, model = tiny(work / "tok")
    model.save_pretrained(student)
    tok.save_pretrained(student)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    model.save_pretrained(teacher)
    tok.save_pretrained(teacher)
    return student, teacher


def rollouts(vocab: int):
    """Left-padded prompts, right-padded responses, as verl's rollout leaves them."""
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(B, P + R, dtype=torch.long)
    attn = torch.zeros(B, P + R, dtype=torch.long)
    for i, (p, r) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS)):
        ids[i, P - p:P + r] = torch.randint(3, vocab, (p + r,), generator=g)
        attn[i, P - p:P + r] = 1
    return ids, attn


def verl_batch(ids, attn):
    from tensordict import TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding

    td = TensorDict({"input_ids": ids, "attention_mask": attn, "position_ids": (attn.cumsum(-1) - 1).clamp(min=0),
                     "prompts": ids[:, :P], "responses": ids[:, P:], "response_mask": attn[:, P:].clone()},
                    batch_size=[B])
    return left_right_2_no_padding(td)


def worker(path: Path):
    import verl
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.engine_workers import TrainingWorker, TrainingWorkerConfig

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"),
                               version_base=None):
        cfg = compose(config_name="sft_trainer_engine", overrides=[
            f"model.path={path}", "engine.strategy=fsdp2", "model.use_remove_padding=True", "trainer.device=cpu",
            "optim.lr=0.01",  # a step large enough that the second mini-batch's loss shows it beyond bf16 noise
            "+model.override_config.attn_implementation=sdpa"])
    w = TrainingWorker(TrainingWorkerConfig(
        model_type="language_model", model_config=omega_conf_to_dataclass(cfg.model),
        engine_config=omega_conf_to_dataclass(cfg.engine), optimizer_config=omega_conf_to_dataclass(cfg.optim),
        checkpoint_config=omega_conf_to_dataclass(cfg.checkpoint)))
    w.reset()
    return w, omega_conf_to_dataclass(cfg.optim)


def teacher_topk(teacher: Path, ids, attn):
    """The teacher's top-k log-probs and ids [B, P + R, K] (fp32) at each position: what its vLLM server
    returns in verl's top-k mode (position j: the distribution of token j + 1)."""
    import transformers

    t = transformers.AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    with torch.no_grad():
        logits = t(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    return torch.log_softmax(logits.float(), -1).topk(K, -1)


def verl_side(student: Path, teacher: Path, ids, attn, run) -> dict:
    """verl's workers: old log-probs and entropy (student), teacher log-probs, then the update."""
    from tensordict import NonTensorStack
    from verl.trainer.distillation import distillation_ppo_loss
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import DistillationConfig, DistillationLossConfig
    from verl.workers.utils.padding import no_padding_2_padding

    actor, optim = worker(student)
    scorer, _ = worker(teacher)

    def score(w):
        td = verl_batch(ids, attn)
        tu.assign_non_tensor(td, use_dynamic_bsz=False, micro_batch_size_per_gpu=2, calculate_entropy=True,
                             compute_loss=False, temperature=1.0, global_token_num=(attn.sum(-1)).tolist())
        return w.infer_batch(td)

    old, tea = score(actor), score(scorer)
    td = verl_batch(ids, attn)
    td["old_log_probs"] = no_padding_2_padding(old["log_probs"], td).float()
    td["entropy"] = no_padding_2_padding(old["entropy"], td).float()
    # the teacher loop's sampled-token mode: one log-prob per position of the unpadded sequence
    offsets = tea["log_probs"].offsets()
    topk = "teacher_topk" in get_method_class(run["method"], METHODS_DIR).needs
    if not topk:
        td["teacher_logprobs"] = torch.nested.nested_tensor_from_jagged(tea["log_probs"].values().float()[:, None],
                                                                        offsets=offsets)
    else:  # the teacher's top-k per position of the unpadded sequence; its sampled tokens' in the extra fields
        top = teacher_topk(teacher, ids, attn)
        real = attn.bool()
        td["teacher_logprobs"] = torch.nested.nested_tensor_from_jagged(top.values[real], offsets=offsets)
        td["teacher_ids"] = torch.nested.nested_tensor_from_jagged(top.indices[real], offsets=offsets)
        td["extra_fields"] = NonTensorStack(*[{plugin.TOKEN_LOGPROBS: row.float()} for row in tea["log_probs"].unbind()])
    method = get_method_class(run["method"], METHODS_DIR)(run["hparams"], run["train"], 0)
    for key, value in trainer.update_keys(td, method, Progress(0, run["train"]["steps"]), MINI, 1).items():
        td[key] = value
    if topk:
        del td["extra_fields"]
    settings = DistillationConfig(distillation_loss=DistillationLossConfig(  # as overrides.py sets them
        loss_mode=loss_name(run["method"]), use_task_rewards=False, use_policy_gradient=False, loss_max_clamp=None,
        log_prob_min_clamp=None, **({"topk": K} if topk else {})))
    config = SimpleNamespace(loss_agg_mode="token-sum", global_batch_info={}, loss_scale_factor=None,
                             strategy="fsdp2")
    actor.set_loss_fn(partial(distillation_ppo_loss, config=config, distillation_config=settings))
    tu.assign_non_tensor(td, use_dynamic_bsz=False, micro_batch_size_per_gpu=1, calculate_entropy=False,
                         temperature=1.0, global_steps=1, mini_batch_size=MINI, global_batch_size=MINI, epochs=1,
                         seed=0, dataloader_kwargs={"shuffle": False}, distillation_use_topk=topk,
                         distillation_only=False, compute_loss=True)
    metrics = actor.train_mini_batch(td)["metrics"]
    return {"loss": [float(v) for v in metrics["distillation/loss"]], "grad_norm": metrics["grad_norm"],
            "optim": {"lr": optim.lr, "betas": list(optim.betas), "weight_decay": optim.weight_decay,
                      "clip_grad": optim.clip_grad}}


def local_side(student: Path, teacher: Path, ids, attn, run, optim: dict) -> dict:
    """The local engine's loss on the same rollouts: fp32 forwards, Method.prepare on the batch,
    each mini-batch's terms through batch_loss, one AdamW step per mini-batch."""
    import transformers

    s = transformers.AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    t = transformers.AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    mask = attn[:, P:].float()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)

    def logprobs(model):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, P - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, ids[:, P:, None])[..., 0] * mask

    with torch.no_grad():
        log_old, log_t = logprobs(s), logprobs(t)
    seqs = Sequences(ids, attn, pos, ids[:, P:], mask)
    extras = {}
    topk = "teacher_topk" in get_method_class(run["method"], METHODS_DIR).needs
    if topk:
        top = teacher_topk(teacher, ids, attn)
        extras = {"topk_ids": top.indices[:, P - 1:-1], "topk_logT": top.values[:, P - 1:-1] * mask[..., None]}
    batch = ScoredBatch(seqs, log_old, log_t, torch.zeros_like(mask), torch.arange(B), extras)
    method = get_method_class(run["method"], METHODS_DIR)(run["hparams"], run["train"], 0)

    def student_output(rows):
        logits = s(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, P - 1:-1]
        logp = torch.log_softmax(logits.float(), -1)
        return StudentOutput(logS=(logp.gather(-1, ids[:, P:, None])[..., 0] * mask)[rows],
                             topk_logS=logp.gather(-1, extras["topk_ids"])[rows] if topk else None)
    progress = Progress(0, run["train"]["steps"])
    method.prepare(batch, progress)
    opt = torch.optim.AdamW(s.parameters(), lr=optim["lr"], betas=tuple(optim["betas"]),
                            weight_decay=optim["weight_decay"])
    minibatches = plugin.minibatch_rows(B, MINI, 1)
    with torch.no_grad():  # each mini-batch's loss had the student not been updated (the test's contrast)
        frozen = [batch_loss(method.loss(batch.select(rows), student_output(rows), progress)[0]).item()
                  for rows in minibatches]
    losses, norms = [], []
    for rows in minibatches:
        terms, _ = method.loss(batch.select(rows), student_output(rows), progress)
        loss = batch_loss(terms)
        opt.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(s.parameters(), optim["clip_grad"]).item())
        opt.step()
        losses.append(loss.item())
    return {"loss": losses, "grad_norm": norms, "loss_without_update": frozen}


def main(work: Path, method: str = "opd") -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{(work / 'pg').resolve()}")
    student, teacher = models(work)
    config = load_yaml(REPO / "config" / "config.yaml")
    run = resolve_run({**config, "base": {**config["base"], "steps": 4}}, "math", method, 0, METHODS_DIR)
    run["hparams"].update(HPARAMS[method])
    os.environ[plugin.RUN_ENV] = str(launch.write_run_file(run, work))
    import transformers

    ids, attn = rollouts(transformers.AutoConfig.from_pretrained(student).vocab_size)
    verl = verl_side(student.resolve(), teacher.resolve(), ids, attn, run)
    local = local_side(student, teacher, ids, attn, run, verl["optim"])
    dist.destroy_process_group()
    print(json.dumps({"verl": verl, "local": local}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])

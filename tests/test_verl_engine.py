"""The verl engine's launch and outputs on CPU: its inputs and launch script, verl's metrics in the
suite's keys, the checkpoint merge command, the plugin's batch read from verl's micro-batch."""
import json
import os
import socket
import re
import subprocess
from unittest import mock

import pytest
import torch

from conftest import MICRO_CONFIG, METHODS_DIR, REPO, run_snakemake, tiny
from opdbench.config import load_yaml, resolve_run
from opdbench.train.engines.verl import launch
from opdbench.train.engines.verl.engine import VerlEngine
from opdbench.train.engines.verl.overrides import TRAINER_MODULE, loss_name
from opdbench.train.engines.verl.plugin import RUN_ENV, register_losses
from opdbench.errors import ConfigError
from opdbench.registry import get_method_class, load_methods
from opdbench.tasks.base import get_task
from test_verl_data import CODE_ROWS, MATH_ROWS
from test_verl_overrides import check_with_verls_classes, compose, multi_teacher

TINY = load_yaml(REPO / "config" / "config.yaml")


def engine(tmp_path, method="opd", device="cuda"):
    tok, model = tiny(tmp_path)
    student = tmp_path / "student"
    model.save_pretrained(student)
    tok.save_pretrained(student)
    run = resolve_run(TINY, "math", method, 0, METHODS_DIR)
    m = get_method_class(run["method"], METHODS_DIR)(run["hparams"], run["train"], 0)
    rows = MATH_ROWS * 40  # 80 prompts: enough for prompts_per_step 16
    return VerlEngine(run, get_task("math"), rows, str(student), str(student), m, tmp_path / "run", device)


def test_a_method_needing_what_verl_lacks_or_a_cpu_device_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="method 'eopd' needs 'teacher_entropy', which engine 'verl' does not provide "
                                         r"\(engines that provide it: local\)"):
        engine(tmp_path, "eopd")
    with pytest.raises(ConfigError, match="base.device"):
        engine(tmp_path, "opd", device="cpu")


def test_the_launch_script_runs_verls_trainer_with_overrides_verl_accepts(tmp_path):
    eng = engine(tmp_path)
    script = eng.prepare()
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "verl_run.json").read_text())["run"] == eng.run
    assert (run_dir / "train.parquet").exists()
    subprocess.run(["bash", "-n", str(script)], check=True)  # the script parses
    # What the script runs, read back through bash: its environment and its command line.
    shown = subprocess.run(["bash", "-c", f"exec() {{ printf '%s\\n' \"$@\" ---; env; }}; source {script}"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    (python, dash_m, module, *overrides), env = shown[:shown.index("---")], shown[shown.index("---") + 1:]
    assert (python, dash_m, module) == (eng.python, "-m", TRAINER_MODULE)
    assert f"+ray_kwargs.ray_init.runtime_env.env_vars.{RUN_ENV}={run_dir / 'verl_run.json'}" in overrides
    assert f"{RUN_ENV}={run_dir / 'verl_run.json'}" in env
    assert f"VERL_FILE_LOGGER_PATH={run_dir / 'verl_metrics' / '0.jsonl'}" in env
    cfg = compose(overrides)
    check_with_verls_classes(cfg)
    assert cfg.data.max_prompt_length == eng.max_prompt_length and cfg.ray_kwargs.ray_init.runtime_env.env_vars[RUN_ENV]



MIXED = {"train": [{"generator": {"steps": [1, 2]}, "size": 1, "task": "math"},
                   {"generator": {"stages": [1]}, "size": 1, "task": "code"}]}


def mixed_engine(tmp_path, teacher, verl):
    """A mixed task's run (math and code prompts, each row its domain) with ``teacher``."""
    tok, model = tiny(tmp_path)
    student = tmp_path / "student"
    model.save_pretrained(student)
    tok.save_pretrained(student)
    run = resolve_run(TINY, "math", "opd", 0, METHODS_DIR)
    run["train"]["verl"] = verl
    m = get_method_class(run["method"], METHODS_DIR)(run["hparams"], run["train"], 0)
    rows = [{**r, "domain": "math"} for r in MATH_ROWS] * 20 + [{**r, "domain": "code"} for r in CODE_ROWS] * 40
    return VerlEngine(run, get_task("mixed", MIXED), rows, str(student), str(teacher), m, tmp_path / "run", "cuda")


def test_a_mixed_tasks_teacher_per_domain_reaches_verl_from_the_launch_script(tmp_path):
    eng = mixed_engine(tmp_path, multi_teacher(tmp_path), {"teacher_gpus_per_node": 2})
    assert eng.teacher == {"math": "/models/math-teacher", "code": "/models/code-teacher"}
    script = eng.prepare()
    shown = subprocess.run(["bash", "-c", f"exec() {{ printf '%s\\n' \"$@\"; }}; source {script}"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    cfg = compose(shown[3:])
    teachers = check_with_verls_classes(cfg).teacher_models
    assert {key: t.model_path for key, t in teachers.items()} == eng.teacher
    assert (cfg.distillation.n_gpus_per_node, [t.num_replicas for t in teachers.values()]) == (2, [1, 1])
    # every prompt's data_source has its teacher
    import pyarrow.parquet as pq
    assert set(pq.read_table(tmp_path / "run" / "train.parquet").column("data_source").to_pylist()) == set(teachers)


def test_a_domain_without_a_teacher_or_a_pool_that_does_not_split_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="the train prompts of 'code' have no teacher: the teacher model .* lists "
                                          "teachers for math"):
        mixed_engine(tmp_path, multi_teacher(tmp_path / "m", ("math",)), {"teacher_gpus_per_node": 2})
    with pytest.raises(ConfigError, match=r"'base.verl.teacher_gpus_per_node' \(3\).*the 2 domain teachers"):
        mixed_engine(tmp_path, multi_teacher(tmp_path / "mc"), {"teacher_gpus_per_node": 3})


def test_verls_logged_metrics_become_the_suites_rows_a_resumed_attempt_replacing_its_steps(tmp_path, monkeypatch):
    from verl.utils.tracking import FileLogger

    def attempt(k, steps, loss):
        monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "verl_metrics" / f"{k}.jsonl"))
        (tmp_path / "verl_metrics").mkdir(exist_ok=True)
        logger = FileLogger("opdbench", "x")
        for step in steps:  # verl's keys, verl's step numbers (from 1)
            logger.log({"actor/distillation/loss": loss + step, "actor/grad_norm": 0.5, "actor/lr": 1e-4,
                        "actor/entropy": 2.0, "response_length/mean": 31.5, "critic/score/mean": 0.25,
                        "timing_s/gen": 3.0, "timing_s/old_log_prob": 1.0, "timing_s/update_actor": 2.0,
                        "actor/opdbench/credit": -0.1, "perf/throughput": 9.0}, step=step)
        logger.finish()

    attempt(0, [1, 2, 3], loss=10.0)  # killed after step 3 (index 2); its checkpoint was at step 2
    attempt(1, [3, 4], loss=20.0)
    rows = launch.read_metrics(tmp_path, 4)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["loss"] for r in rows] == [11.0, 12.0, 23.0, 24.0]  # the retraced step from the later attempt
    assert rows[0] == {"step": 0, "loss": 11.0, "grad_norm": 0.5, "lr": 1e-4, "entropy": 2.0, "response_length": 31.5,
                       "train_accuracy": 0.25, "seconds_generation": 3.0, "seconds_student_scoring": 1.0,
                       "seconds_update": 2.0, "credit_mean": -0.1}
    with pytest.raises(RuntimeError, match=r"no metrics for steps \[4\] of 5"):
        launch.read_metrics(tmp_path, 5)


def test_the_last_checkpoint_is_merged_with_a_command_verls_merger_accepts(tmp_path):
    from verl.model_merger.base_model_merger import parse_args

    root = tmp_path / launch.CHECKPOINT_DIR
    with pytest.raises(FileNotFoundError, match="latest_checkpointed_iteration.txt"):
        launch.latest_checkpoint(tmp_path)
    (root / "global_step_40" / "actor").mkdir(parents=True)
    (root / "latest_checkpointed_iteration.txt").write_text("40")
    actor = launch.latest_checkpoint(tmp_path)
    cmd = launch.merge_command("python", actor, tmp_path / "hf")
    assert cmd[1:3] == ["-m", "verl.model_merger"]
    with mock.patch("sys.argv", ["merger", *cmd[3:]]):
        args = parse_args()
    assert (args.operation, args.backend, args.local_dir, args.target_dir) == ("merge", "fsdp", str(actor),
                                                                                str(tmp_path / "hf"))


def test_the_entry_point_registers_every_method_as_a_verl_loss():
    import verl  # noqa: F401  (loads the verl.plugins entry points)
    from verl.trainer.distillation.losses import DISTILLATION_LOSS_REGISTRY, get_distillation_loss_settings

    for method, cls in load_methods(METHODS_DIR).items():
        assert loss_name(method) in DISTILLATION_LOSS_REGISTRY
        settings = get_distillation_loss_settings(loss_name(method))
        # the sampled-token teacher mode, or verl's top-k mode for a method needing the teacher's top-k
        # (whose sampled-token log-probs agent_loop.py adds)
        topk = "teacher_topk" in cls.needs
        assert (settings.use_topk, settings.use_estimator) == (topk, not topk)
    assert register_losses() == []  # idempotent: a second import registers nothing twice


def test_the_suites_batch_is_read_from_verls_unpadded_micro_batch_as_verls_own_losses_read_it():
    """Two sequences in verl's no-padding (jagged) layout: the plugin's padded [B, R] tensors line up
    with what verl's built-in sampled-token loss reads (its k1 is logS - logT at the same tokens)."""
    from tensordict import TensorDict
    from verl.trainer.distillation.losses import compute_distillation_loss_reverse_kl_estimator
    from verl.workers.config import DistillationConfig, DistillationLossConfig

    from opdbench.train.engines.verl.plugin import scored_batch
    from verl.workers.utils.padding import no_padding_2_padding

    def jagged(rows):
        return torch.nested.nested_tensor(rows, layout=torch.jagged)

    prompts, responses = [3, 2], [2, 3]
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(p + r, generator=g) for p, r in zip(prompts, responses)]  # per position of prompt+response
    teacher = [torch.randn(p + r, 1, generator=g) for p, r in zip(prompts, responses)]
    data = TensorDict({"prompts": jagged([torch.ones(p, dtype=torch.long) for p in prompts]),
                       "responses": jagged([torch.ones(r, dtype=torch.long) for r in responses]),
                       "response_mask": jagged([torch.ones(r) for r in responses]),
                       "old_log_probs": jagged([torch.full((r,), -1.0) for r in responses]),
                       "teacher_logprobs": jagged(teacher)}, batch_size=[2])
    logS = no_padding_2_padding(jagged(full), data)
    batch = scored_batch(data, logS.shape[1])
    assert batch.mask.tolist() == [[1, 1, 0], [1, 1, 1]] and batch.group.tolist() == [0, 1]
    # the log-prob of response token t sits at position prompt + t - 1 of the unpadded sequence
    assert logS[0, :2].tolist() == full[0][2:4].tolist() and logS[1].tolist() == full[1][1:4].tolist()
    assert batch.logT[0, :2].tolist() == teacher[0][2:4, 0].tolist() and batch.logT[0, 2] == 0
    assert batch.logOld[1].tolist() == [-1.0] * 3
    config = DistillationConfig(distillation_loss=DistillationLossConfig(loss_mode="k1"))
    k1, _ = compute_distillation_loss_reverse_kl_estimator(None, config, {"log_probs": jagged(full)}, data)
    m = batch.mask.bool()
    assert torch.allclose(k1[m], (logS - batch.logT)[m])


def test_snakemake_plans_verl_runs_and_stops_at_start_up_for_a_method_verl_cannot_run(tmp_path):
    """base.engine: verl with its base.verl block passes the config schema and the start-up checks
    for OPD and REOPOLD; adding EOPD stops `snakemake -n` with the registry's message, which names the
    setting that avoids the need: with it, EOPD is planned, and TrOPD with and without its teacher
    prefixes (fkl_outlier) too; TrOPD's JSD outlier stops it."""
    overlay = tmp_path / "verl.yaml"
    verl_base = ("base: {engine: verl, device: cuda, verl: {nnodes: 1, student_gpus_per_node: 2, "
                 "teacher_gpus_per_node: 2, rollout_tp: 2, teacher_tp: 1, gpu_memory_utilization: 0.6}}\n")
    overlay.write_text(verl_base + "methods: [opd, reopold]\n")
    proc = run_snakemake(tmp_path / "work", "-n", configfiles=(MICRO_CONFIG, overlay), timeout=300)
    assert re.search(r"^train\s+\d+$", proc.stdout, re.M), proc.stdout[-3000:]  # the train jobs are planned
    overlay.write_text(verl_base + "methods: [opd, eopd]\n")
    proc = run_snakemake(tmp_path / "work", "-n", configfiles=(MICRO_CONFIG, overlay), timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert ("method 'eopd' needs 'teacher_entropy', which engine 'verl' does not provide "
            "(engines that provide it: local); or set method_settings.eopd.entropy: topk") in out, out[-3000:]
    overlay.write_text(verl_base + "methods: [opd, eopd, tropd, fkl_outlier]\n"
                       "method_settings: {eopd: {entropy: topk}}\n")
    proc = run_snakemake(tmp_path / "work", "-n", configfiles=(MICRO_CONFIG, overlay), timeout=300)
    for run in ("eopd", "tropd", "fkl_outlier"):
        assert f"results/micro/train/math/{run}/seed0/run.json" in proc.stdout
    overlay.write_text(verl_base + "methods: [opd, jsd_05]\n")  # TrOPD's JSD outlier reads the student's top-k
    proc = run_snakemake(tmp_path / "work", "-n", configfiles=(MICRO_CONFIG, overlay), timeout=300, check=False)
    assert "run 'jsd_05': method 'tropd' needs 'student_topk', which engine 'verl' does not provide" in \
        proc.stdout + proc.stderr


def test_snakemake_plans_the_reopold_math_experiment_on_verl(tmp_path):
    """`snakemake -n --configfile config/experiments/reopold_math.yaml` plans the paper-scale DAG:
    the two hub models, one verl train job per method (OPD, REOPOLD, ExOPD) and an evaluation per model, after
    fetching its data (LUFFY's benchmark file from GitHub, its training set and both models from the hub)."""
    work = tmp_path / "work"
    experiment = load_yaml(REPO / "config" / "experiments" / "reopold_math.yaml")
    overlay = tmp_path / "hf.yaml"  # vLLM is not installed here: the start-up check would stop the dry run
    overlay.write_text("evaluation: {backend: hf}\n")
    proc = run_snakemake(work, "-n", configfiles=(REPO / "config" / "experiments" / "reopold_math.yaml", overlay),
                         timeout=300)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert (counts["train"], counts["model"], counts["evaluate"], counts["make_data"]) == ("3", "2", "5", "1"), counts
    assert (counts["fetch_resource"], counts["fetch_hub"]) == ("1", "3"), counts
    assert "resources/luffy/valid.all.parquet" in proc.stdout
    assert "resources/hub/datasets/Elliott/Openr1-Math-46k-8192/fetched.json" in proc.stdout
    for method in experiment["methods"]:
        assert f"results/reopold_math/train/math/{method}/seed0/run.json" in proc.stdout


FAKE_SRUN = """#!/usr/bin/env bash
# srun [options] command...: logs the node and runs the command on this machine
node=""; while [[ "$1" == -* ]]; do [[ "$1" == -w ]] && { node=$2; shift; }; shift; done
echo "srun $node: $*" >> "$LOG"; exec "$@"
"""


def test_a_multi_node_run_makes_one_ray_cluster_of_its_slurm_allocation_before_verl_starts(tmp_path):
    """nnodes 2: the launch script starts Ray's head on the allocation's first node and a worker on the
    second (each with the node's GPUs, through srun), waits for both, then runs verl's trainer, which
    joins that cluster through RAY_ADDRESS. SLURM's and Ray's commands are fakes that log their calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    fakes = {"srun": FAKE_SRUN,
             "scontrol": '#!/usr/bin/env bash\n[ "$*" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n',
             "squeue": '#!/usr/bin/env bash\n[ "$*" = "-h -j 4711 -o %N" ] && echo "gpu[07-08]"\n',
             "hostname": '#!/usr/bin/env bash\n[ "$*" = "-I" ] && echo "127.0.0.1 fe80::1"\n',
             "ray": '#!/usr/bin/env bash\necho "ray $*" >> "$LOG"\n',
             "python": '#!/usr/bin/env bash\necho "python $* RAY_ADDRESS=$RAY_ADDRESS" >> "$LOG"\n'}
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    python = str(bin_dir / "python")
    head = socket.socket()  # the "head" port the script waits for before it starts the workers
    head.bind(("127.0.0.1", 0))
    head.listen()
    port = head.getsockname()[1]
    prologue = launch.ray_on_slurm(2, 8, python, port=port)
    script = launch.write_launch_script(tmp_path / "launch.sh", [python, "-m", launch.TRAINER_MODULE, "trainer.nnodes=2"],
                                        {"VERL_FILE_LOGGER_PATH": str(tmp_path / "m" / "0.jsonl")}, prologue)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "SLURM_JOB_NODELIST": "gpu[07-08]"}
    # Snakemake's SLURM job step runs a multi-node job with only SLURM_JOB_ID of the allocation's
    # variables (tests/test_slurm.py): the node list then comes from squeue
    jobstep_env = {**{k: v for k, v in env.items() if k != "SLURM_JOB_NODELIST"}, "SLURM_JOB_ID": "4711"}
    try:
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        calls = log.read_text().splitlines()
        log.unlink()
        proc = subprocess.run(["bash", str(script)], env=jobstep_env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert sorted(log.read_text().splitlines()) == sorted(calls)  # the same steps (the workers start in the background)
    finally:
        head.close()
    assert "srun gpu07: hostname -I" in calls
    assert f"srun gpu07: {bin_dir}/ray start --head --node-ip-address=127.0.0.1 --port={port} --num-gpus=8 --block" in calls
    assert f"srun gpu08: {bin_dir}/ray start --address=127.0.0.1:{port} --num-gpus=8 --block" in calls
    waits = [i for i, c in enumerate(calls) if "wait-for-ray-nodes 2" in c]
    trainer = [i for i, c in enumerate(calls) if launch.TRAINER_MODULE in c]
    assert waits and trainer and waits[0] < trainer[0]
    assert calls[trainer[0]].endswith(f"trainer.nnodes=2 RAY_ADDRESS=127.0.0.1:{port}")
    # outside an allocation the script says how to run it instead of training on one node
    env.pop("SLURM_JOB_NODELIST")
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "submit it through SLURM (profiles/slurm)" in proc.stderr


def test_uniopds_difficulty_profile_runs_before_verl_and_its_pool_is_the_training_parquet(tmp_path, monkeypatch):
    """Uni-OPD on verl: the initial student's difficulty profile (profile.py, a process of its own: the
    local engine's profile_difficulty with the generation interface, transformers here) gives the pool
    of prompt indices that the training parquet holds, upsampled prompts repeated; a second prepare
    (a resumed run) reuses the profile."""
    import pyarrow.parquet as pq

    from opdbench.config import deep_update
    from opdbench.train import common

    tok, model = tiny(tmp_path)
    student = tmp_path / "student"
    model.save_pretrained(student)
    tok.save_pretrained(student)
    config = deep_update(TINY, {"base": {"max_new_tokens": 8},
                                "method_settings": {"uniopd": {"difficulty_prompts": 24, "difficulty_samples": 2}}})
    run = resolve_run(config, "math", "uniopd", 0, METHODS_DIR)
    method = get_method_class("uniopd", METHODS_DIR)(run["hparams"], run["train"], 0)
    rows = MATH_ROWS * 40
    eng = VerlEngine(run, get_task("math"), rows, str(student), str(student), method, tmp_path / "run", "cuda")
    eng.prepare()
    profile = json.loads((tmp_path / "run" / "difficulty.json").read_text())
    assert profile["config_hash"] == run["config_hash"] and profile["backend"] == "hf"
    counts = {int(k): v for k, v in profile["value"].items()}
    assert len(counts) == 24 and all(0 <= v <= 2 for v in counts.values())
    table = pq.read_table(tmp_path / "run" / "train.parquet").to_pylist()
    assert [r["extra_info"]["index"] for r in table] == common.prompt_pool(method, len(rows), counts)
    # a resumed run reuses the profile (no second profiling process); with prompts of mid difficulty
    # (1 of 2 right: an untrained student solves none) those appear twice (upsample 2)
    mid = {i: i % 3 for i in counts}
    (tmp_path / "run" / "difficulty.json").write_text(json.dumps({**profile, "value": mid}))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("profiled twice"))
    eng.prepare()
    pool = common.prompt_pool(method, len(rows), mid)
    table = pq.read_table(tmp_path / "run" / "train.parquet").to_pylist()
    assert [r["extra_info"]["index"] for r in table] == pool and len(pool) > len(set(pool))
    assert [json.loads(r["reward_model"]["ground_truth"]) for r in table] == [rows[i] for i in pool]

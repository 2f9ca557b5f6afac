"""Every paper-scale experiment file states its paper's numbers: each file's key numbers (models, steps,
batch, rollouts, lengths, lr, temperature, evaluation, method hyperparameters) are written once below
with where the paper states them, and checked against (a) the file as the workflow composes it over
config/config.yaml and (b) the resolved run of each of its methods; where the file is a method's own
paper setting, also against that method's ``paper_settings`` in paper mode. A typo in a file or in a
method's paper_settings fails here; so does a new file without an entry (docs/experiments.md)."""
from pathlib import Path

import pytest

from conftest import METHODS_DIR, REPO
from opdbench.config import benchmark_samples, role_models, compose_config, deep_update, load_yaml, resolve_run, validate_config
from opdbench.train.engines.verl.overrides import VerlResources, verl_overrides

EXPERIMENTS = REPO / "config" / "experiments"
TINY = load_yaml(REPO / "config" / "config.yaml")
NOT_PAPER_SETTINGS = {"ablations.yaml"}  # tiny-scale variants, no paper setting

SEED000, SEED004 = "shared/seeds/000 (REOPOLD)", "shared/seeds/004 (TrOPD)"
G_OPD_SOURCE = "METHODS.md (ExOPD) and the official G-OPD scripts"
UNI_OPD = "METHODS.md (Uni-OPD) and its official scripts (exps/scripts/OPD)"
# The papers' data by its name in opdbench/data/catalog.py: REOPOLD's from LUFFY (App. D), ExOPD's and
# Uni-OPD's from G-OPD's scripts.
LUFFY = {name: f"luffy/{file}" for name, file in [
    ("aime24", "aime24"), ("aime25", "aime25"), ("amc23", "amc23"), ("math500", "math500"), ("minerva", "minerva"),
    ("olympiad", "olympiad_bench")]}
G_OPD_BENCHMARKS = {name: f"g_opd/{name}" for name in ("aime24", "aime25", "hmmt25_feb", "hmmt25_nov")}
# G-OPD's multi-teacher training set and code evaluation (README; code_eval: N = 4)
MATH_AND_CODE = [("math", "g_opd/math_and_code_math"), ("code", "g_opd/math_and_code_code")]
G_OPD_CODE = {"humaneval_plus": "evalplus resources/HumanEvalPlus-v0.1.10.jsonl.gz",
              "mbpp_plus": "evalplus resources/MbppPlus-v0.2.0.jsonl.gz",
              # G-OPD's lcb_runner maps --release_version v6 to the problems new in v6 (test6.jsonl only)
              "livecodebench_v6": "livecodebench resources/livecodebench/test6.jsonl"}
G_OPD_SAMPLES = {**{b: 32 for b in G_OPD_BENCHMARKS}, **{b: 4 for b in G_OPD_CODE}}
# Uni-OPD's scripts (single- and multi-teacher set the same numbers)
UNI_OPD_RECIPE = dict(
    engine="verl", methods=["opd", "exopd", "uniopd"],
    train=dict(steps=50, prompts_per_step=64, rollouts_per_prompt=16, mini_batch_size=1024, lr=1.0e-6,
               lr_schedule="constant_with_warmup", warmup_steps=5, weight_decay=0.1, adam_betas=[0.9, 0.98],
               max_new_tokens=16384, temperature=1.0, clip_ratio_low=0.2, clip_ratio_high=0.28,
               loss_agg_mode="seq-mean-token-mean"),
    evaluation=dict(n_samples=32, temperature=1.0, top_p=1.0, max_new_tokens=16384),
    hparams={"uniopd": dict(delta=0.4, margin="spread", max_gap=10.0, online_balance=True, offline_balance=True,
                            difficulty_samples=8, difficulty_prompts=None),
             "exopd": dict(lam=1.25)},
)
# What a paper's settings share: REOPOLD's App. D math (both sizes), G-OPD's scripts (both settings).
REOPOLD_MATH = dict(
    engine="verl", methods=["opd", "reopold", "exopd"], train_data="luffy/openr1_math_46k_8192",
    benchmarks=LUFFY, evaluation=dict(n_samples=32, temperature=0.6, top_p=0.95, max_new_tokens=32768),
    # App. F "Evaluation": Avg@32 on AIME-24/25 and AMC-23, Pass@1 on the other three
    samples={"aime24": 32, "aime25": 32, "amc23": 32, "math500": 1, "minerva": 1, "olympiad": 1},
    train=dict(prompts_per_step=128, rollouts_per_prompt=8, mini_batch_size=256, max_new_tokens=8192,
               temperature=1.0, lr_schedule="constant"))
G_OPD = dict(
    engine="verl", methods=["opd", "exopd"], train_data="g_opd/deepmath_103k_level6",
    benchmarks=G_OPD_BENCHMARKS, evaluation=dict(n_samples=32, temperature=1.0, top_p=1.0, max_new_tokens=16384),
    hparams={"exopd": dict(lam=1.25, reference="student")},
    train=dict(prompts_per_step=1024, rollouts_per_prompt=1, mini_batch_size=1024, ppo_epochs=1,
               max_new_tokens=16384, temperature=1.0, top_p=1.0, lr=1.0e-5, lr_schedule="constant",
               warmup_steps=0, clip_ratio_c=3.0))

# One entry per file: what its paper states, and where. `paper_method`: the method whose paper
# setting the file is, so that its paper_settings must give the same training numbers in paper mode
# (None where the file is another of that paper's settings than the one paper_settings holds).
FILES = {
    "reopold_math.yaml": dict(
        REOPOLD_MATH, source=f"{SEED000}, Table 6 (1.5B math) and App. D 'Math reasoning'", paper_method="reopold",
        teacher="Skywork/Skywork-OR1-Math-7B", student="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        train=dict(REOPOLD_MATH["train"], steps=300, lr=1.0e-5),
        hparams={"reopold": dict(lam=0.3, beta=0.2, t_switch=1 / 3)}),
    "reopold_math_7b.yaml": dict(
        REOPOLD_MATH, source=f"{SEED000}, Table 6 (7B math), App. D 'Math reasoning', App. F", paper_method=None,
        teacher="Skywork/Skywork-OR1-32B-Preview", student="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        train=dict(REOPOLD_MATH["train"], steps=200, lr=3.0e-6),
        hparams={"reopold": dict(lam=0.3, beta=0.2, t_switch=50 / 200)}),
    "tropd_single_domain.yaml": dict(
        source=f"{SEED004}, Section 5.1 and Table 3 (single-domain)", paper_method="tropd",
        engine="local", methods=["opd", "eopd", "entropy_opd_20", "reopold_2stage", "reopold", "tropd"],
        teacher="Skywork/Skywork-OR1-Math-7B", student="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        train=dict(steps=200, lr=5.0e-6, lr_schedule="constant", prompts_per_step=128, rollouts_per_prompt=4,
                   max_new_tokens=8096),
        evaluation=dict(n_samples=32),
        hparams={"tropd": dict(k=64, beta=0.001), "eopd": dict(k=64)},
        train_data="openthoughts3/math",
        benchmarks={b: LUFFY[b] for b in ("aime24", "aime25", "amc23")}),
    "tropd_multi_domain.yaml": dict(
        source=f"{SEED004}, Section 5.1 and Table 3 (multi-domain)", paper_method="tropd", task="multi_domain",
        engine="local", methods=["opd", "reopold", "tropd"],
        teacher="Skywork/Skywork-OR1-7B", student="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        train=dict(steps=200, lr=5.0e-6, lr_schedule="constant", prompts_per_step=128, rollouts_per_prompt=4,
                   max_new_tokens=8096),
        evaluation=dict(n_samples=32),
        hparams={"tropd": dict(k=64, beta=0.001)},
        train_data=[("math", "openthoughts3/math"), ("code", "openthoughts3/code"), ("math", "openthoughts3/science")],
        benchmarks={**{b: LUFFY[b] for b in ("aime24", "aime25", "amc23")}, "livecodebench_v6": "livecodebench release_v6",
                    "gpqa_diamond": "luffy/gpqa_diamond"}),
    "eopd_math.yaml": dict(
        source="METHODS.md (EOPD) and PUBLISHED_EXTRA.md (EOPD Table 2)", paper_method="eopd",
        engine="local", methods=["opd", "eopd"], teacher="Qwen/Qwen3-8B", student="Qwen/Qwen3-1.7B-Base",
        train=dict(prompts_per_step=128, rollouts_per_prompt=1, mini_batch_size=32, lr=3.0e-6, lr_schedule="cosine",
                   max_new_tokens=4096, temperature=1.0, clip_ratio_low=0.2, loss_agg_mode="token-mean"),
        evaluation=dict(n_samples=8, temperature=1.0, top_p=0.8, max_new_tokens=8192),
        hparams={"eopd": dict(tau=0.8, alpha=1.0, k=16)},
        train_data="math/train",
        benchmarks={b: LUFFY[b] for b in ("math500", "amc23", "minerva", "olympiad", "aime24", "aime25")}),
    "exopd_same_size.yaml": dict(
        G_OPD, source=f"{G_OPD_SOURCE}; PUBLISHED_EXTRA.md (same size)", paper_method="exopd",
        teacher="resources/models/Qwen3-4B-Non-Thinking-RL-Math", student="Qwen/Qwen3-4B",
        train=dict(G_OPD["train"], steps=50)),
    "exopd_strong_to_weak.yaml": dict(
        G_OPD, source=f"{G_OPD_SOURCE}; PUBLISHED_EXTRA.md (strong-to-weak)", paper_method=None,
        teacher="Qwen/Qwen3-30B-A3B-Instruct-2507", student="Qwen/Qwen3-1.7B", train=dict(G_OPD["train"], steps=100)),
    "exopd_multi_teacher.yaml": dict(
        G_OPD, source=f"{G_OPD_SOURCE} (multi-teacher script, README); PUBLISHED_EXTRA.md (same size, multi-teacher)",
        paper_method="exopd", task="math_code",
        teacher={"by_domain": {"math": {"source": "resources/models/Qwen3-4B-Non-Thinking-RL-Math"},
                               "code": {"source": "resources/models/Qwen3-4B-Non-Thinking-RL-Code"}}},
        student="Qwen/Qwen3-4B", train=dict(G_OPD["train"], steps=50),
        train_data=MATH_AND_CODE, benchmarks={**G_OPD_BENCHMARKS, **G_OPD_CODE}, samples=G_OPD_SAMPLES),
    "uniopd_multi_teacher.yaml": dict(
        UNI_OPD_RECIPE, source=f"{UNI_OPD} (multi_teacher/); PUBLISHED_EXTRA.md (multi-teacher)",
        paper_method="uniopd", task="math_code",
        teacher={"by_domain": {"math": {"source": "resources/models/Qwen3-4B-RL-Math"},
                               "code": {"source": "resources/models/Qwen3-4B-RL-Code"}}},
        student="Qwen/Qwen3-4B",
        train_data=MATH_AND_CODE, benchmarks={**G_OPD_BENCHMARKS, **G_OPD_CODE}, samples=G_OPD_SAMPLES),
    "uniopd_single_teacher.yaml": dict(
        UNI_OPD_RECIPE, source=f"{UNI_OPD}; shared/seeds/002 (evaluation, 50 steps); PUBLISHED_EXTRA.md",
        paper_method="uniopd",
        teacher="resources/models/Qwen3-4B-RL-Math", student="Qwen/Qwen3-4B",
        train_data=G_OPD["train_data"], benchmarks=G_OPD_BENCHMARKS),
}


def composed(name: str) -> dict:
    """The file as the workflow composes it (workflow/rules/common.smk)."""
    return compose_config(TINY, [load_yaml(EXPERIMENTS / name)])


def where_from(spec) -> str | list:
    """The catalog name of a source ((domain task, name) pairs for a mixed task's list), else the code
    benchmark it loads."""
    if isinstance(spec, list):
        return [(s["task"], where_from(s)) for s in spec]
    return spec.get("from") or f"{spec['source']} {spec.get('version') or spec['path']}"


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name not in NOT_PAPER_SETTINGS))
def test_every_experiment_file_has_checked_numbers_and_passes_the_start_up_checks(name, tmp_path, monkeypatch):
    assert name in FILES, f"config/experiments/{name} has no entry in FILES: write its paper's numbers there"
    config = composed(name)
    assert config["experiment"] == Path(name).stem
    # teachers that are not on the hub are local directories the user places (docs/experiments.md)
    monkeypatch.chdir(tmp_path)
    for role in ("teacher", "student"):
        for spec in role_models(config["task_settings"][FILES[name].get("task", "math")], role).values():
            if spec["source"].startswith("resources/"):
                (tmp_path / spec["source"]).mkdir(parents=True)
    validate_config(config, METHODS_DIR, jobs_run_here=False)  # vLLM's import is checked where the jobs run


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_file_and_each_resolved_run_state_the_papers_numbers(name):
    want = FILES[name]
    assert want["source"]
    config = composed(name)
    task = want.get("task", "math")
    math = config["task_settings"][task]
    assert config["tasks"] == [task] and config["methods"] == want["methods"]
    assert config["base"]["engine"] == want["engine"] and config["base"]["device"] == "cuda"
    teacher = want["teacher"] if isinstance(want["teacher"], dict) else {"source": want["teacher"]}
    assert (math["teacher"], math["student"]) == (teacher, {"source": want["student"]})
    data = math["data"]
    assert where_from(data["train"]) == want["train_data"]
    assert {b: where_from(spec) for b, spec in data["benchmarks"].items()} == want["benchmarks"]
    for spec in data["benchmarks"].values():  # only the catalog's name: its file and filter are the catalog's
        assert "from" not in spec or set(spec) <= {"from", "n_samples", "task"}, spec
    assert {k: config["evaluation"][k] for k in want["evaluation"]} == want["evaluation"]
    if "samples" in want:
        assert benchmark_samples(config, task) == want["samples"]
    assert {k: config["base"][k] for k in want["train"]} == want["train"]
    for method, hparams in want["hparams"].items():
        assert {k: config["method_settings"][method][k] for k in hparams} == pytest.approx(hparams)
    assert "uniopd" in config["methods"] or "uniopd" not in config["method_settings"]  # no tiny setting left over
    for run_name in config["methods"]:
        run = resolve_run(config, task, run_name, 0, METHODS_DIR)
        assert {k: run["train"][k] for k in want["train"]} == want["train"], run_name
        if run["method"] in want["hparams"]:
            assert {k: run["hparams"][k] for k in want["hparams"][run["method"]]} == pytest.approx(
                want["hparams"][run["method"]]), run_name
        batch = run["train"]["prompts_per_step"] * run["train"]["rollouts_per_prompt"]
        assert batch % run["train"]["mini_batch_size"] == 0, run_name


@pytest.mark.parametrize("name", sorted(n for n, w in FILES.items() if w["paper_method"]))
def test_the_papers_method_has_the_same_numbers_in_paper_mode(name):
    """The file is its method's own paper setting: the method's paper_settings say the same."""
    want = FILES[name]
    run = resolve_run(deep_update(composed(name), {"mode": "paper"}), want.get("task", "math"), want["paper_method"], 0,
                      METHODS_DIR)
    assert {k: run["train"][k] for k in want["train"]} == want["train"]
    assert not run["diff_from_base"]["train"], "paper_settings and the file disagree"


@pytest.mark.parametrize("name", sorted(n for n, w in FILES.items() if w["engine"] == "verl"))
def test_verl_accepts_each_run_of_a_verl_file(name):
    """The runs convert to verl's overrides (batch split over the GPUs, LR schedule, ExOPD's reference)."""
    config = composed(name)
    resources = VerlResources.from_settings(config["base"]["verl"])
    for run_name in config["methods"]:
        run = resolve_run(config, FILES[name].get("task", "math"), run_name, 0, METHODS_DIR)
        verl_overrides(run, student="/models/student", teacher="/models/teacher", train_file="/data/train.parquet",
                       n_prompts=40_000, max_prompt_length=1024, out_dir="/runs/x", resources=resources)


# The papers that state their rollout batch but not the mini-batch: in paper mode these take the
# file's base.mini_batch_size (docs/experiments.md).
MINI_BATCH_NOT_STATED = {"tropd"}


@pytest.mark.parametrize("method", ["opd", "eopd", "reopold", "exopd", "uniopd", "tropd"])
def test_paper_settings_that_change_the_batch_bring_a_mini_batch_that_divides_it(method):
    """mini_batch_size counts rollouts: a paper's n = 1 (ExOPD) or 64 x 16 (Uni-OPD) with another
    setting's mini-batch would change the number of updates per step, or not divide at all."""
    from opdbench.registry import get_method_class

    paper = get_method_class(method, METHODS_DIR).paper_settings
    if method in MINI_BATCH_NOT_STATED:
        assert "mini_batch_size" not in paper  # stated after all: take the method off the list
    elif {"prompts_per_step", "rollouts_per_prompt"} & set(paper):
        assert (paper["prompts_per_step"] * paper["rollouts_per_prompt"]) % paper["mini_batch_size"] == 0

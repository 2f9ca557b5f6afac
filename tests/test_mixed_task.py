"""A task made of tasks (multi-domain distillation, opdbench/tasks/mixed.py): one training set of
math and code prompts, benchmarks of both, every row formatted and scored by its own domain's task;
config errors for mixed sources; a teacher per domain (multi-teacher distillation): routed scoring
and generation, its config checks; the micro DAG trains and evaluates a mixed task with a teacher
per domain end to end."""
import json
import random

import pytest

from opdbench.config import compose_config, load_yaml, validate_config
from opdbench.errors import ConfigError
from opdbench.tasks import get_task
from opdbench.tasks.code import generate_problem as code_problem
from opdbench.train.engines.verl.data import problem_of, verl_rows
from opdbench.train.engines.verl.reward import compute_score

from conftest import MICRO_CONFIG, REPO, run_snakemake

MATH_GEN = {"steps": [1, 2], "max_value": 20, "max_operand": 5}
CODE_GEN = {"stages": [1, 2], "tests": 4}
MIXED = {"seed": 0,
         "train": [{"generator": MATH_GEN, "size": 30, "task": "math"}, {"generator": CODE_GEN, "size": 20, "task": "code"}],
         "benchmarks": {"math_id": {"generator": MATH_GEN, "size": 6, "task": "math"},
                        "code_id": {"generator": CODE_GEN, "size": 5, "task": "code"}},
         "sandbox": {"time_limit_s": 2.0, "memory_mb": 512, "workers": 2}}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    task = get_task("mixed", MIXED)
    manifest = task.write_data(out, seed=0)
    rows = {split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "eval")}
    return task, manifest, rows


def test_one_training_set_of_both_domains_each_row_its_domains_prompt(written):
    task, manifest, rows = written
    assert manifest["sizes"] == {"train": 50, "math_id": 6, "code_id": 5}
    domains = [r["domain"] for r in rows["train"]]
    assert domains.count("math") == 30 and domains.count("code") == 20
    assert {r["domain"] for r in rows["eval"] if r["benchmark"] == "code_id"} == {"code"}
    assert len({r["problem"] for r in rows["train"] + rows["eval"]}) == 61  # no benchmark problem is trained on
    math_row = next(r for r in rows["train"] if r["domain"] == "math")
    code_row = next(r for r in rows["train"] if r["domain"] == "code")
    assert task.messages(math_row) == get_task("math", {}).messages(math_row)
    assert task.messages(code_row) == get_task("code", {}).messages(code_row)
    assert task.messages(math_row) != task.messages({**math_row, "domain": "code"})


def test_each_row_is_scored_by_its_domains_verifier(written):
    task, _, rows = written
    math_row = next(r for r in rows["eval"] if r["domain"] == "math")
    code_row = next(r for r in rows["eval"] if r["domain"] == "code")
    gold_math = f"So the answer is $\\boxed{{{math_row['answer']}}}$."
    gold_code = f"```python\n{code_row['reference']}\n```"
    scores = task.score_many([gold_math, gold_code, gold_code, "So the answer is $\\boxed{-1}$."],
                             [math_row, code_row, math_row, math_row])
    assert [s.correct for s in scores] == [True, True, False, False]
    assert set(task.scoring_report()) == {"code"}  # the code checker's report, under its domain
    assert task.for_problem(code_row).same_answer(" x ", "x") and not task.for_problem(math_row).same_answer("1", "2")
    # verl: the domain is the row's data_source, and the reward function scores it with that task
    verl = verl_rows(task, [math_row, code_row])
    assert [r["data_source"] for r in verl] == ["math", "code"]
    assert problem_of(verl[1]["reward_model"]["ground_truth"]) == code_row
    assert compute_score("code", gold_code, verl[1]["reward_model"]["ground_truth"]) == 1.0
    assert compute_score("math", gold_math, verl[0]["reward_model"]["ground_truth"]) == 1.0


def test_prompts_without_tests_train_and_score_wrong(tmp_path):
    """OpenThoughts3's code prompts carry no tests: they load as prompts and score wrong, never crash."""
    path = tmp_path / "code.jsonl"
    path.write_text(json.dumps({"problem": "Write a function f that returns 1."}) + "\n")
    task = get_task("code", {"sandbox": {"workers": 1}})
    rows = task.load_source({"path": str(path), "answer_key": None})
    assert rows == [{"task_id": "prompt/0", "problem": "Write a function f that returns 1.", "reference": None,
                     "entry_point": None, "tests": None}]
    tested = code_problem(random.Random(0), 1, 4, 6, 20)
    scores = task.score_many(["```python\ndef f():\n    return 1\n```", f"```python\n{tested['reference']}\n```"],
                             [rows[0], tested])
    assert [s.correct for s in scores] == [False, True]


def mixed_config(data_overrides: dict) -> dict:
    tiny = load_yaml(REPO / "config" / "config.yaml")
    math = tiny["task_settings"]["math"]
    settings = {"task": "mixed", "data": {**MIXED, **data_overrides}, "teacher": math["teacher"], "student": math["student"]}
    settings["data"].pop("sandbox")
    return compose_config(tiny, [{"tasks": ["both"], "task_settings": {"both": settings}}])


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"generator": MATH_GEN, "size": 30}}, r"task_settings\.both\.data\.train' needs 'task'"),
    ({"benchmarks": {"b": {"generator": MATH_GEN, "size": 3, "task": "mixed"}}}, r"benchmarks\.b\.task'.*valid: code, math"),
    ({"benchmarks": {"b": {"generator": CODE_GEN, "size": 3, "task": "math"}}}, r"benchmarks\.b\.generator.*stages"),
])
def test_a_mixed_tasks_sources_must_name_their_task(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(mixed_config(overrides), jobs_run_here=False)


def test_a_list_of_training_sources_needs_a_mixed_task():
    config = compose_config(load_yaml(REPO / "config" / "config.yaml"),
                            [{"task_settings": {"math": {"data": {"train": [{"generator": MATH_GEN, "size": 3}]}}}}])
    with pytest.raises(ConfigError, match=r"task_settings\.math\.data\.train'.*task: mixed"):
        validate_config(config, jobs_run_here=False)
    validate_config(mixed_config({}), jobs_run_here=False)  # the well-formed one passes


# -- a teacher per domain (multi-teacher distillation) ------------------------------------------
def test_each_row_is_scored_by_its_domains_teacher(tmp_path):
    """The local engine's routed scoring equals each teacher scoring its own rows, position by position
    (log-probs, top-k and entropy), and its routed generation asks each prompt's own teacher."""
    import types

    import torch

    from opdbench.models import build_tiny_model
    from opdbench.train.engines.local import LocalEngine
    from opdbench.train.rollout import pack

    from conftest import tiny

    tok, math_teacher = tiny(tmp_path)
    code_teacher = build_tiny_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2}, tok, seed=1).eval()
    prompts = [tok(text)["input_ids"] for text in ("Ann has 3 pens.", "def f(x):", "How many pens", "return x")]
    seqs = pack(prompts, [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14]], tok.pad_token_id)
    domains = ["math", "code", "math", "code"]
    engine = types.SimpleNamespace(cfg={"scoring_chunk": None}, teachers={"math": math_teacher, "code": code_teacher})
    engine._score = lambda model, s, t, **kw: LocalEngine._score(engine, model, s, t, **kw)
    routed = LocalEngine._score_by_teacher(engine, seqs, domains, 1.0, topk=3, entropy=True)
    m = seqs.response_mask.bool()
    for domain, teacher in engine.teachers.items():
        alone = LocalEngine._score(engine, teacher, seqs, 1.0, topk=3, entropy=True)
        mine = torch.tensor([d == domain for d in domains])[:, None].expand_as(m)[m]
        assert torch.equal(routed.topk_ids[mine], alone.topk_ids[mine]), domain
        for field in ("logp", "entropy", "topk_logp"):  # a smaller batch may round the last bits differently
            assert torch.allclose(getattr(routed, field)[mine], getattr(alone, field)[mine], atol=1e-5), (domain, field)
    assert not torch.allclose(LocalEngine._score(engine, math_teacher, seqs, 1.0).logp,
                              LocalEngine._score(engine, code_teacher, seqs, 1.0).logp)  # the routing matters
    asked = []

    def fake_generate(model):
        def generate(ps, n, *args, **kwargs):
            asked.extend((model, p) for p in ps)
            return [[len(p), i] for p in ps for i in range(n)]
        return generate

    engine._generate = fake_generate
    drafts = LocalEngine._teacher_generate(engine, prompts, domains)(prompts, 2, 1.0, 1.0, 8)
    assert drafts == [[len(p), i] for p in prompts for i in range(2)]  # prompt-major, as one teacher would
    assert [(m is math_teacher, p) for m, p in asked] == [(True, prompts[0]), (True, prompts[2]),
                                                          (False, prompts[1]), (False, prompts[3])]


def test_a_teacher_per_domain_only_for_a_mixed_task_and_for_every_domain():
    config = mixed_config({})
    math = config["task_settings"]["both"]["teacher"]
    config["task_settings"]["both"]["teacher"] = {"by_domain": {"math": math, "code": {"source": "Org/code-teacher"}}}
    validate_config(config, jobs_run_here=False)
    from opdbench.data.hub import hub_models

    assert hub_models(config) == {"Org/code-teacher": None}
    config["task_settings"]["both"]["teacher"] = {"by_domain": {"math": math}}
    with pytest.raises(ConfigError, match=r"task_settings\.both\.teacher\.by_domain' has teachers for math.*\(code, math\)"):
        validate_config(config, jobs_run_here=False)
    tiny = compose_config(load_yaml(REPO / "config" / "config.yaml"), [])
    tiny["task_settings"]["math"]["teacher"] = {"by_domain": {"math": math}}
    with pytest.raises(ConfigError, match=r"task_settings\.math\.teacher\.by_domain'.*needs a mixed task"):
        validate_config(tiny, jobs_run_here=False)


@pytest.mark.slow
def test_the_micro_dag_distils_each_domain_from_its_own_teacher(tmp_path):
    micro = load_yaml(MICRO_CONFIG)["task_settings"]
    both = {**micro["math"], "task": "mixed", "sandbox": micro["code"]["sandbox"], "evaluation": micro["code"]["evaluation"],
            "teacher": {"by_domain": {"math": micro["math"]["teacher"], "code": micro["code"]["teacher"]}},
            "data": {"seed": 0,
                     "train": [{**micro["math"]["data"]["train"], "task": "math", "size": 120},
                               {**micro["code"]["data"]["train"], "task": "code", "size": 120}],
                     "benchmarks": {"math_id": {**micro["math"]["data"]["benchmarks"]["math_id"], "task": "math"},
                                    "code_id": {**micro["code"]["data"]["benchmarks"]["code_id"], "task": "code"}}}}
    overlay = tmp_path / "mixed.yaml"
    overlay.write_text(json.dumps({"tasks": ["both"], "methods": ["opd"], "seeds": [0], "task_settings": {"both": both}}))
    run_snakemake(tmp_path, "--cores", "2", configfiles=(MICRO_CONFIG, overlay), timeout=1200)
    results = tmp_path / "results" / "micro"
    teacher = results / "models" / "both" / "teacher"
    assert json.loads((teacher / "model.json").read_text())["teachers"] == {"math": "math", "code": "code"}
    sft_rows = {d: json.loads((teacher / d / "model.json").read_text())["role"] for d in ("math", "code")}
    assert sft_rows == {"math": "teacher (math)", "code": "teacher (code)"}
    run = json.loads((results / "train" / "both" / "opd" / "seed0" / "run.json").read_text())
    assert run["steps"] == 4
    metrics = json.loads((results / "eval" / "both" / "base" / "teacher" / "seed0" / "metrics.json").read_text())
    assert set(metrics["benchmarks"]) == {"math_id", "code_id"}
    metrics = json.loads((results / "eval" / "both" / "opd" / "seed0" / "metrics.json").read_text())
    assert set(metrics["benchmarks"]) == {"math_id", "code_id"}
    samples = [json.loads(line) for line in (results / "eval" / "both" / "opd" / "seed0" / "samples.jsonl").read_text().splitlines()]
    assert {(s["benchmark"], s["domain"]) for s in samples} == {("math_id", "math"), ("code_id", "code")}
    assert set(metrics["scoring"]) == {"code"}  # the code checker ran on the code benchmark's samples
    board = (results / "leaderboard.md").read_text()
    assert "## both" in board and "math_id Avg@2" in board and "code_id Avg@2" in board


def test_teachers_must_share_the_students_vocabulary(tmp_path):
    from opdbench.models import check_shared_vocabulary, train_tokenizer

    from conftest import tiny

    tok, _ = tiny(tmp_path)
    tok.save_pretrained(tmp_path / "student")
    other = train_tokenizer(["Completely different words and numbers 12345 here."] * 40, 300, tmp_path / "other")
    check_shared_vocabulary(tmp_path / "student", tmp_path / "student")
    with pytest.raises(ConfigError, match=r"the teacher \(.*other\) does not share the student's vocabulary"):
        check_shared_vocabulary(tmp_path / "student", tmp_path / "other")
    composite = tmp_path / "teacher"
    (composite / "math").mkdir(parents=True)
    tok.save_pretrained(composite / "math")
    other.save_pretrained(composite / "code")
    (composite / "model.json").write_text(json.dumps({"weights": None, "teachers": {"math": "math", "code": "code"}}))
    with pytest.raises(ConfigError, match="the code teacher .* does not share"):
        check_shared_vocabulary(tmp_path / "student", composite)
    from opdbench.models import resolve_weights

    with pytest.raises(ValueError, match="lists a teacher per domain .*teacher_refs"):
        resolve_weights(composite)


def test_a_pointers_identity_follows_its_commit_and_its_files(tmp_path):
    """A run's config hash binds its base models: a hub model's commit, a local model's files."""
    from opdbench.models import write_manifest
    from opdbench.pipeline import _model_identity

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"1234")
    pointer = tmp_path / "pointer"
    pointer.mkdir()
    write_manifest(pointer, str(weights), source=str(weights))
    first = _model_identity(pointer)
    (weights / "model.safetensors").write_bytes(b"12345")  # new weights at the same path
    assert _model_identity(pointer) != first
    second = _model_identity(pointer)
    write_manifest(pointer, str(weights), source="Org/model", commit="a" * 40)
    assert _model_identity(pointer) not in (first, second)


def test_a_tiny_domain_teacher_needs_its_domains_training_rows(tmp_path):
    from opdbench import pipeline

    config = mixed_config({"train": [{"generator": MATH_GEN, "size": 30, "task": "math"}]})
    math = config["task_settings"]["both"]["teacher"]
    config["task_settings"]["both"]["teacher"] = {"by_domain": {"code": math, "math": math}}
    validate_config(config, jobs_run_here=False)  # a domain with benchmarks only is still a domain
    pipeline.make_data(config, "both", tmp_path / "data")
    pipeline.build_tokenizer(config, "both", tmp_path / "data", tmp_path / "tok")
    with pytest.raises(ConfigError, match=r"teacher\.by_domain\.code': a tiny teacher learns from its domain's training "
                                          r"rows, and the train split has none of 'code'"):
        pipeline.build_model(config, "both", "teacher", tmp_path / "data", tmp_path / "tok", tmp_path / "teacher")

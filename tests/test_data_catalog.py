"""The papers' named datasets (opdbench/data/catalog.py): each name reads its file in the layout
the paper's data has (checked on files written here in those layouts), the files come from a pinned
GitHub commit or a hub dataset (what the workflow fetches first), and an unknown name is a config
error. Where the real pinned files are present under resources/ (fetched once), their sizes and
gold answers are checked too."""
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from opdbench.config import compose_config, load_yaml, validate_config
from opdbench.data.catalog import CATALOG, expand
from opdbench.data.hub import dataset_of, hub_datasets, record_of
from opdbench.data.resources import RESOURCE_SHA256, check_sha256, resource_urls, resources_of
from opdbench.errors import ConfigError
from opdbench.tasks import get_task
from opdbench.tasks.sources import last_boxed, load_problems

REPO = Path(__file__).resolve().parents[1]
LUFFY_SYSTEM = "Your task is to follow a systematic, thorough reasoning process ... include the answer in \\boxed{}."


def luffy_rows(source: str, problems: list[tuple[str, str]], repeat: int) -> list[dict]:
    """Rows in LUFFY's valid.all.parquet layout: a system prompt, then the question; AIME and AMC repeated."""
    return [{"data_source": source, "prompt": [{"role": "system", "content": LUFFY_SYSTEM}, {"role": "user", "content": q}],
             "ability": "math", "reward_model": {"ground_truth": a, "style": "rule"},
             "extra_info": {"index": i, "split": "default"}}
            for _ in range(repeat) for i, (q, a) in enumerate(problems)]


def test_luffys_benchmarks_by_name_one_row_per_problem(tmp_path):
    path = tmp_path / "valid.all.parquet"
    aime = [("Find x if x + 1 = 205.", "204"), ("Compute 7 * 10.", "70")]
    math = [("What is 1/2 + 1/2?", "1"), ("Solve 2y = 3.", "\\frac{3}{2}")]
    pd.DataFrame(luffy_rows("aime", aime, 32) + luffy_rows("math", math, 1) + luffy_rows("aime25", aime[:1], 32)).to_parquet(path)
    rows = load_problems({"from": "luffy/aime24", "path": str(path)})
    assert rows == [{"problem": q, "answer": a} for q, a in aime]  # the question, not LUFFY's system prompt
    assert load_problems({"from": "luffy/math500", "path": str(path)}) == [{"problem": q, "answer": a} for q, a in math]
    assert len(load_problems({"from": "luffy/aime25", "path": str(path)})) == 1
    assert len(load_problems({"from": "luffy/aime24", "path": str(path), "distinct": False})) == 64  # the spec's keys win


def test_a_hub_datasets_shards_by_glob_prompts_without_answers_and_only_the_columns_read(tmp_path, monkeypatch):
    """OpenThoughts3's layout: conversations of (human, gpt) turns, a domain, no reference answer."""
    shards = tmp_path / "data"
    shards.mkdir()
    for k, domains in enumerate([["math", "code"], ["math"]]):
        pd.DataFrame([{"domain": d, "source": "x", "difficulty": 5,
                       "conversations": [{"from": "human", "value": f"q{k}{i} {d}"}, {"from": "gpt", "value": "long " * 50}]}
                      for i, d in enumerate(domains)]).to_parquet(shards / f"train-{k:05d}-of-00002.parquet")
    import pyarrow.parquet as pq

    read = []
    original = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, **kw: read.append(kw["columns"]) or original(self, **kw))
    rows = load_problems({"from": "openthoughts3/math", "path": f"{tmp_path}/**/*.parquet"})
    assert rows == [{"problem": "q00 math", "answer": ""}, {"problem": "q10 math", "answer": ""}]
    assert read == [["conversations", "domain"]] * 2
    with pytest.raises(ConfigError, match="no data file matches"):
        load_problems({"from": "openthoughts3/math", "path": f"{tmp_path}/none/*.parquet"})


def test_answers_from_the_last_boxed_expression_of_a_solution(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pd.DataFrame([{"problem": "p1", "solution": "First \\boxed{2}, then $\\boxed{\\frac{1}{x^{2}}}$.", "level": "Level 5"},
                  {"problem": "p2", "solution": "no boxed answer here", "level": "Level 1"}]).to_parquet(path)
    assert load_problems({"from": "math/train", "path": str(path)}) == [{"problem": "p1", "answer": "\\frac{1}{x^{2}}"}]
    assert last_boxed("\\boxed{a{b}c} \\boxed{unclosed") is None and last_boxed("x \\boxed{a{b}c}") == "a{b}c"


def test_every_named_file_is_fetched_pinned_and_every_name_resolves():
    urls = resource_urls()
    for name, spec in CATALOG.items():
        path = spec.get("path")
        if path is None:
            assert spec["source"] == "mmath"
        elif dataset_of(path):
            assert path.startswith(f"resources/hub/datasets/{dataset_of(path)}/"), name
        else:  # a file of a paper's GitHub repository at a commit, with its sha256
            assert path.removeprefix("resources/") in urls and path.removeprefix("resources/") in RESOURCE_SHA256, name
    data = {"train": {"from": "luffy/openr1_math_46k_8192"},
            "benchmarks": {"aime24": {"from": "luffy/aime24"}, "math500": {"from": "luffy/math500"},
                           "hmmt": {"from": "g_opd/hmmt25_feb"}, "offline": {"from": "mmath/aime24"}}}
    assert resources_of(data) == sorted([record_of("Elliott/Openr1-Math-46k-8192", "dataset"),
                                         "resources/g_opd/hmmt25_feb.jsonl", "resources/luffy/valid.all.parquet"])
    config = {"tasks": ["math"], "task_settings": {"math": {"data": data}}}
    assert hub_datasets(config) == {"Elliott/Openr1-Math-46k-8192": None}
    assert expand({"from": "luffy/aime24", "n_samples": 32})["n_samples"] == 32


def test_an_unknown_dataset_name_is_a_config_error_naming_the_key():
    tiny = load_yaml(REPO / "config" / "config.yaml")
    config = compose_config(tiny, [{"task_settings": {"math": {"data": {"benchmarks": {"aime": {"from": "luffy/aime2024"}}}}}}])
    with pytest.raises(ConfigError, match=r"task_settings\.math\.data\.benchmarks\.aime\.from.*'luffy/aime2024'.*luffy/aime24"):
        validate_config(config, jobs_run_here=False)


def test_a_gold_answer_with_stray_delimiters_or_a_dollar_sign_still_scores():
    """LUFFY's Minerva and OlympiadBench keep a few answers with '$' or a full stop inside; MATH-500
    has dollar amounts (\\$18.90)."""
    task = get_task("math", {"seed": 0, "train": {"from": "mmath/aime24"}, "benchmarks": {}})
    problem = {"problem": "p", "answer": "$(-\\infty, 0) \\cup\\{1\\}$."}
    right, wrong = task.score_many(["So $\\boxed{(-\\infty,0)\\cup\\{1\\}}$.", "So $\\boxed{0}$."], [problem] * 2)
    assert right.correct and not wrong.correct
    dollars = {"problem": "p", "answer": "\\$18.90"}
    scores = task.score_many(["So $\\boxed{\\$18.90}$.", "So $\\boxed{18.90}$.", "So $\\boxed{18.91}$."], [dollars] * 3)
    assert [s.correct for s in scores] == [True, True, False]


# The real files, where fetched (`snakemake resources/luffy/valid.all.parquet ...` where GitHub is
# reachable): name -> problems, as the papers report them.
REAL_SIZES = {"luffy/aime24": 30, "luffy/aime25": 30, "luffy/amc23": 83, "luffy/math500": 500, "luffy/minerva": 272,
              "luffy/olympiad_bench": 675, "luffy/gpqa_diamond": 198, "g_opd/aime24": 30, "g_opd/aime25": 30,
              "g_opd/hmmt25_feb": 30, "g_opd/hmmt25_nov": 30}


@pytest.mark.parametrize("name, size", REAL_SIZES.items())
def test_the_real_pinned_files_gold_answers_score_1_and_shuffled_near_0(name, size, monkeypatch):
    monkeypatch.chdir(REPO)
    path = CATALOG[name]["path"]
    if not Path(path).exists():
        pytest.skip(f"{path} not fetched here (no network)")
    check_sha256(path.removeprefix("resources/"), path)
    rows = load_problems({"from": name})
    assert len(rows) == len({r["problem"] for r in rows}) == size
    task = get_task("math", {"seed": 0, "train": {"from": "mmath/aime24"}, "benchmarks": {}})
    # a model boxes the answer itself (a dollar amount as \\$18.90), not the data's stray delimiters
    bare = re.compile(r"(?<!\\)\$")  # a math delimiter, not a dollar sign (\\$18.90)
    say = lambda answer: "Step by step, the answer is $\\boxed{" + bare.sub("", answer).rstrip(".") + "}$."  # noqa: E731
    assert all(s.correct for s in task.score_many([say(r["answer"]) for r in rows], rows))
    shuffled = [r["answer"] for r in rows]
    random.Random(0).shuffle(shuffled)
    other = [s.correct for s, a, r in zip(task.score_many([say(a) for a in shuffled], rows), shuffled, rows)
             if a != r["answer"]]
    assert len(other) >= 0.7 * size and sum(other) <= 0.01 * len(other)


def test_a_wrong_layout_names_the_files_columns_and_an_empty_source_is_an_error(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pd.DataFrame([{"question": "q", "domain": "math", "solution": "no box"}]).to_parquet(path)
    with pytest.raises(ConfigError, match=r"has no 'conversations.0.value' \(its keys: \['question', 'domain', 'solution'\]\)"):
        load_problems({"from": "openthoughts3/math", "path": str(path)})
    with pytest.raises(ConfigError, match=r"no rows with a \\boxed\{\} answer"):
        load_problems({"from": "math/train", "path": str(path), "problem_key": "question"})


def test_a_benchmark_must_be_scorable(tmp_path):
    """Prompts without a reference answer or tests may train (OpenThoughts3's), never be a benchmark."""
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"problem": "Write f."}\n{"problem": "Write g."}\n')
    for task in ("math", "code"):
        cfg = {"seed": 0, "train": {"path": str(path), "answer_key": None},
               "benchmarks": {"b": {"path": str(path), "answer_key": None}}}
        with pytest.raises(ConfigError, match="benchmark 'b': 2 of its 2 rows have no reference answer or tests"):
            get_task(task, cfg).write_data(tmp_path / task, seed=0)

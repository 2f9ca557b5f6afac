"""Bad config is stopped at start-up with a message that names the key or the valid names."""
import copy
from pathlib import Path

import pytest

from opdbench.config import load_yaml, resolve_run, validate_config
from opdbench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
METHODS_DIR = REPO / "methods"
CONFIG = load_yaml(REPO / "config" / "config.yaml")


def bad(**edits):
    cfg = copy.deepcopy(CONFIG)
    for path, value in edits.items():
        node = cfg
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_default_config_is_valid():
    validate_config(CONFIG, METHODS_DIR)


def test_misspelled_method_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown method 'odp'.*Did you mean 'opd'.*Valid methods: .*opd"):
        validate_config(bad(methods=["odp"]), METHODS_DIR)


def test_unknown_task_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown task 'maths'.*Valid tasks: code, math"):
        validate_config(bad(tasks=["maths"]), METHODS_DIR)


def test_misspelled_key_is_named():
    cfg = bad()
    cfg["base"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown config key 'base.lrr'.*Did you mean 'lr'"):
        validate_config(cfg, METHODS_DIR)


def test_a_writer_key_the_task_does_not_have_is_named():
    cfg = bad()
    cfg["task_settings"]["math"]["student"]["sft"]["writer"] = {"stop_erly": 0.5}
    with pytest.raises(ConfigError, match=r"task_settings.math.student.sft.writer.stop_erly.*Did you mean 'stop_early'"):
        validate_config(cfg, METHODS_DIR)
    cfg["task_settings"]["math"]["student"]["sft"]["writer"] = {"stop_early": 1.5}
    with pytest.raises(ConfigError, match=r"task_settings.math.student.sft.writer.stop_early"):
        validate_config(cfg, METHODS_DIR)
    cfg["task_settings"]["math"]["student"]["sft"]["writer"] = {}
    cfg["task_settings"]["code"]["student"]["sft"]["writer"] = {"drop_line": 0.5}  # code's writer stops early only
    with pytest.raises(ConfigError, match=r"task_settings.code.student.sft.writer.drop_line"):
        validate_config(cfg, METHODS_DIR)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"config key 'base.lr'.*not of type 'number'"):
        validate_config(bad(base__lr="1e-4"), METHODS_DIR)
    with pytest.raises(ConfigError, match=r"config key 'base.loss_agg_mode'"):
        validate_config(bad(base__loss_agg_mode="mean"), METHODS_DIR)


def test_numbers_given_on_the_command_line_are_read_as_numbers():
    # `snakemake --config 'seeds=[0, 1]' 'base={steps: 5}'` hands over strings: YAML's BaseLoader.
    cfg = bad(seeds=["0", "1"])
    cfg["base"] = {**cfg["base"], "steps": "5", "lr": "0.001"}
    validate_config(cfg, METHODS_DIR, command_line=("seeds", "base"))
    assert cfg["seeds"] == [0, 1] and cfg["base"]["steps"] == 5 and cfg["base"]["lr"] == 0.001
    # Only what came from the command line: a quoted number in a config file is still an error.
    with pytest.raises(ConfigError, match=r"config key 'seeds.0': '0' is not of type 'integer'"):
        validate_config(bad(seeds=["0"]), METHODS_DIR)
    # A string that is not a number stays a string, for the schema to name.
    with pytest.raises(ConfigError, match=r"config key 'seeds.0': 'one' is not of type 'integer'"):
        validate_config(bad(seeds=["one"]), METHODS_DIR, command_line=("seeds",))
    with pytest.raises(ConfigError, match=r"config key 'base.steps': '5.5' is not of type 'integer'"):
        validate_config(bad(base__steps="5.5"), METHODS_DIR, command_line=("base",))
    # A value whose schema has several types, a string among them, stays a string (snakemake hands
    # an experiment file's `where: {data_source: AIME2024}` here as well).
    cfg = bad()
    cfg["task_settings"]["math"]["data"]["benchmarks"]["aime24"] = {"source": "mmath", "where": {"data_source": "AIME2024"}}
    cfg["base"] = {**cfg["base"], "clip_ratio_c": "3.0"}
    validate_config(cfg, METHODS_DIR, command_line=("task_settings", "base"), jobs_run_here=False)
    assert cfg["task_settings"]["math"]["data"]["benchmarks"]["aime24"]["where"] == {"data_source": "AIME2024"}
    assert cfg["base"]["clip_ratio_c"] == 3.0  # [number, null]: read as a number


def test_variant_with_unknown_hyperparameter():
    with pytest.raises(ConfigError, match=r"method 'opd' has no hyperparameter 'lambda'"):
        validate_config(bad(variants={"opd_x": {"method": "opd", "lambda": 2}}), METHODS_DIR)
    with pytest.raises(ConfigError, match=r"variant 'v'.*unknown method 'nope'"):
        validate_config(bad(variants={"v": {"method": "nope"}}), METHODS_DIR)


@pytest.mark.parametrize("where, edit, message", [
    ("variants", {"variants": {"exopd_big": {"method": "exopd", "lam": "big"}}},
     r"config key 'variants\.exopd_big\.lam': 'big' is not of type 'number'"),
    ("variants", {"variants": {"r": {"method": "reopold", "lam": 1.0}}},
     r"'variants\.r\.lam': 1\.0 is greater than or equal to the maximum of 1"),
    ("variants", {"variants": {"t": {"method": "tropd", "guidance": "yes"}}},
     r"'variants\.t\.guidance': 'yes' is not of type 'boolean'"),
    ("method_settings", {"method_settings": {"uniopd": {"difficulty_samples": 2.5}}},
     r"'method_settings\.uniopd\.difficulty_samples': 2\.5 is not of type 'integer'"),
    ("method_settings", {"method_settings": {"tropd": {"region": "adaptve"}}},
     r"'method_settings\.tropd\.region': 'adaptve' is not one of \['adaptive', 'threshold', 'none'\]"),
])
def test_a_hyperparameter_of_the_wrong_type_or_range_is_named_at_start_up(where, edit, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({**copy.deepcopy(CONFIG), **edit}, METHODS_DIR)


@pytest.mark.parametrize("name", ["teacher", "student", "base"])
def test_a_variant_may_not_take_a_reserved_name(name):
    with pytest.raises(ConfigError, match=rf"variant name '{name}' is reserved"):
        validate_config(bad(variants={name: {"method": "opd"}}), METHODS_DIR)


def test_every_method_declares_a_schema_its_defaults_fit():
    from opdbench.registry import load_methods

    for name, cls in load_methods(METHODS_DIR).items():
        assert set(cls.schema) == set(cls.defaults), name


def test_a_method_file_without_a_schema_or_with_a_reserved_name_is_refused(tmp_path):
    from opdbench.method import Method
    from opdbench.registry import register_method

    class NoSchema(Method):
        name = "no_schema"
        defaults = {"scale": 0.5}

    with pytest.raises(ConfigError, match="declares no schema for hyperparameter 'scale'"):
        register_method(NoSchema)

    class BadDefault(NoSchema):
        name = "bad_default"
        schema = {"scale": {"type": "integer"}}

    with pytest.raises(ConfigError, match="its defaults do not fit its schema"):
        register_method(BadDefault)

    class Teacher(Method):
        name = "teacher"

    with pytest.raises(ConfigError, match="method name 'teacher'.*is reserved"):
        register_method(Teacher)


def test_a_misspelled_model_source_is_named_at_start_up(tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["task_settings"]["math"]["student"]["source"] = "tinyy"
    with pytest.raises(ConfigError, match=r"'task_settings\.math\.student\.source': 'tinyy' is not 'tiny'.*"
                                          r"Did you mean 'tiny'\?"):
        validate_config(cfg, METHODS_DIR)
    for good in ("Qwen/Qwen3-1.7B", str(tmp_path)):  # a hub id, a local directory
        cfg["task_settings"]["math"]["student"]["source"] = good
        validate_config(cfg, METHODS_DIR)


def test_a_run_records_the_hash_of_its_method_file_and_training_code():
    run = resolve_run(CONFIG, "math", "opd", 0, METHODS_DIR)
    assert set(run["code"]) == {"method_file", "training_code"}
    assert resolve_run(CONFIG, "math", "uniopd", 0, METHODS_DIR)["code"]["method_file"] != run["code"]["method_file"]


def test_the_code_version_counts_untracked_files_as_dirty(tmp_path):
    import subprocess

    from opdbench.provenance import code_version

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    assert not code_version.__wrapped__(tmp_path).endswith("-dirty")  # uncached
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "new_method.py").write_text("x = 2\n")
    assert code_version.__wrapped__(tmp_path).endswith("-dirty")


def test_mini_batch_must_divide_the_rollout_batch():
    with pytest.raises(ConfigError, match="base.mini_batch_size"):
        validate_config(bad(base__mini_batch_size=7), METHODS_DIR)


def test_run_records_its_diff_from_base_and_a_stable_hash():
    cfg = bad(variants={"opd_again": {"method": "opd"}})
    a = resolve_run(cfg, "math", "opd", 0, METHODS_DIR)
    b = resolve_run(cfg, "math", "opd_again", 0, METHODS_DIR)
    assert a["diff_from_base"] == {"method": "opd", "hparams": {}, "hparams_changed": {}, "train": {}}
    assert a["train"] == cfg["base"] and a["config_hash"] == resolve_run(cfg, "math", "opd", 0, METHODS_DIR)["config_hash"]
    assert b["method"] == "opd" and b["config_hash"] != a["config_hash"]


def test_method_settings_and_variants_are_recorded_as_hyperparameter_changes():
    cfg = bad(method_settings={"uniopd": {"difficulty_prompts": 64}},
              variants={"ex15": {"method": "exopd", "lam": 1.5}, "uni_nm": {"method": "uniopd", "margin": "none"}})
    ex = resolve_run(cfg, "math", "ex15", 0, METHODS_DIR)
    assert ex["hparams"]["lam"] == 1.5 and ex["diff_from_base"]["hparams_changed"] == {"lam": {"default": 1.25, "run": 1.5}}
    uni = resolve_run(cfg, "math", "uni_nm", 0, METHODS_DIR)["diff_from_base"]["hparams_changed"]
    assert uni == {"difficulty_prompts": {"default": None, "run": 64}, "margin": {"default": "spread", "run": "none"}}
    assert ex["train"] == cfg["base"]  # unified mode: no method touches the shared settings
    with pytest.raises(ConfigError, match=r"method_settings: unknown method 'unopd'.*Did you mean 'uniopd'"):
        validate_config(bad(method_settings={"unopd": {}}), METHODS_DIR)
    with pytest.raises(ConfigError, match=r"'variants\.t\.outlier': 'fk' is not one of \['fkl', 'mask', 'clip', 'jsd'\]"):
        validate_config(bad(variants={"t": {"method": "tropd", "outlier": "fk"}}), METHODS_DIR)
    with pytest.raises(ConfigError, match=r"method 'tropd' has no hyperparameter 'kk'"):
        validate_config(bad(method_settings={"tropd": {"kk": 3}}), METHODS_DIR)


def test_paper_mode_applies_each_methods_published_settings():
    cfg = bad(mode="paper")
    run = resolve_run(cfg, "math", "uniopd", 0, METHODS_DIR)
    assert run["train"]["clip_ratio_high"] == 0.28 and run["train"]["loss_agg_mode"] == "seq-mean-token-mean"
    assert run["diff_from_base"]["train"]["clip_ratio_high"] == {"base": 0.2, "run": 0.28}


def test_an_experiment_files_replace_paths_are_taken_as_written_not_merged():
    from opdbench.config import compose_config

    default = {"evaluation": {"n_samples": 8, "seed": 1}, "task_settings": {"math": {
        "data": {"train": {"generator": {"steps": [1, 5]}, "size": 10}, "benchmarks": {"math_id": {"size": 2}}},
        "teacher": {"source": "tiny", "arch": {"hidden_size": 8}}}}}
    paper = {"replace": ["task_settings.math"], "evaluation": {"n_samples": 32},
             "task_settings": {"math": {"data": {"train": {"path": "resources/t.jsonl"},
                                                 "benchmarks": {"aime24": {"path": "resources/a.jsonl"}}},
                                        "teacher": {"source": "org/teacher"}}}}
    merged = compose_config(default, [{k: v for k, v in paper.items() if k != "replace"}])
    assert "generator" in merged["task_settings"]["math"]["data"]["train"]  # what plain merging would leave
    config = compose_config(default, [paper], {"seeds": [0]})
    assert config["task_settings"]["math"] == paper["task_settings"]["math"]
    assert config["evaluation"] == {"n_samples": 32, "seed": 1}  # not listed in replace: merged
    assert config["seeds"] == [0]  # --config last
    # a later file merges over an earlier file's replaced subtree
    later = {"task_settings": {"math": {"teacher": {"source": "org/other"}}}}
    assert compose_config(default, [paper, later])["task_settings"]["math"]["teacher"] == {"source": "org/other"}
    with pytest.raises(ConfigError, match="'task_settings.code' is not set in the same file"):
        compose_config(default, [{"replace": ["task_settings.code"], "task_settings": {"math": {}}}])

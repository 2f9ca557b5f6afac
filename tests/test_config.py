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
    cfg["task_settings"]["code"]["student"]["sft"]["writer"] = {"stop_early": 0.5}  # code has no writers
    with pytest.raises(ConfigError, match=r"task_settings.code.student.sft.writer.stop_early"):
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


def test_variant_with_unknown_hyperparameter():
    with pytest.raises(ConfigError, match=r"method 'opd' has no hyperparameter 'lambda'"):
        validate_config(bad(variants={"opd_x": {"method": "opd", "lambda": 2}}), METHODS_DIR)
    with pytest.raises(ConfigError, match=r"variant 'v'.*unknown method 'nope'"):
        validate_config(bad(variants={"v": {"method": "nope"}}), METHODS_DIR)


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
    with pytest.raises(ConfigError, match=r"method 'tropd': hyperparameter 'outlier' is 'fk'; valid: fkl, mask, clip, jsd"):
        validate_config(bad(variants={"t": {"method": "tropd", "outlier": "fk"}}), METHODS_DIR)
    with pytest.raises(ConfigError, match=r"method 'tropd' has no hyperparameter 'kk'"):
        validate_config(bad(method_settings={"tropd": {"kk": 3}}), METHODS_DIR)


def test_paper_mode_applies_each_methods_published_settings():
    cfg = bad(mode="paper")
    run = resolve_run(cfg, "math", "uniopd", 0, METHODS_DIR)
    assert run["train"]["clip_ratio_high"] == 0.28 and run["train"]["loss_agg_mode"] == "seq-mean-token-mean"
    assert run["diff_from_base"]["train"]["clip_ratio_high"] == {"base": 0.2, "run": 0.28}

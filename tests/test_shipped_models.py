"""The shipped tiny base models (assets/tiny_models/) are the tiny config's: each has the
recipe config/config.yaml states, the data and tokenizer this checkout generates, and the
weights it was shipped with; the model rule installs them and trains a model whose recipe
differs (opdbench/models/shipped.py)."""
import json
import shutil

import pytest

from opdbench.config import load_yaml, role_models
from opdbench.data.resources import sha256_of
from opdbench.models import shipped
from opdbench.pipeline import build_model, build_tokenizer, dataset_hash, make_data

from conftest import REPO

CONFIG = load_yaml(REPO / "config" / "config.yaml")
MODELS = [(task, role) for task in CONFIG["tasks"] for role in ("teacher", "student")]


@pytest.mark.parametrize("task,role", MODELS)
def test_each_tiny_model_of_the_config_is_shipped_with_its_recipe(task, role):
    spec = role_models(CONFIG["task_settings"][task], role)[None]
    info = json.loads((shipped.SHIPPED_DIR / task / role / "model.json").read_text())
    # a recipe change in config.yaml needs new shipped models (tools/ship_tiny_models.py)
    assert info["recipe"]["spec"] == {k: spec[k] for k in ("source", "arch", "sft")}
    assert sha256_of(shipped.SHIPPED_DIR / task / role / "model.safetensors") == info["files"]["model.safetensors"]
    assert info["trained"]["machine"]["cpu"] and info["trained"]["libraries"]["torch"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Each task's data and tokenizer as this checkout generates them."""
    tmp = tmp_path_factory.mktemp("shipped")
    for task in CONFIG["tasks"]:
        make_data(CONFIG, task, tmp / task / "data")
        build_tokenizer(CONFIG, task, tmp / task / "data", tmp / task / "tokenizer")
    return tmp


@pytest.fixture(scope="module")
def math_inputs(inputs):
    return inputs / "math"


@pytest.mark.parametrize("task,role", MODELS)
def test_the_model_rule_installs_the_shipped_model_of_its_recipe(inputs, tmp_path, task, role):
    # this checkout generates the data and tokenizer the shipped models were trained on: a change of the
    # data generator or the tokenizer (its files) would make every machine train its own
    data, tokenizer = inputs / task / "data", inputs / task / "tokenizer"
    wanted = shipped.recipe(CONFIG["task_settings"][task][role], dataset_hash(data), tokenizer)
    info = json.loads((shipped.SHIPPED_DIR / task / role / "model.json").read_text())
    assert shipped.recipe_differences(info["recipe"], wanted) == []
    build_model(CONFIG, task, role, data, tokenizer, tmp_path / role)
    manifest = json.loads((tmp_path / role / "model.json").read_text())
    assert manifest["shipped"]["from"] == f"assets/tiny_models/{task}/{role}"
    assert manifest["shipped"]["trained"]["machine"]  # where it was trained; manifest["machine"]: where installed
    assert manifest["weights"] == "." and manifest["dataset_hash"] == wanted["dataset_hash"]
    for name, digest in info["files"].items():
        assert sha256_of(tmp_path / role / name) == digest


def test_another_recipe_is_not_taken_from_the_shipped_models(math_inputs):
    spec = json.loads(json.dumps(CONFIG["task_settings"]["math"]["student"]))
    spec["sft"]["steps"] += 1
    wanted = shipped.recipe(spec, dataset_hash(math_inputs / "data"), math_inputs / "tokenizer")
    found, why = shipped.find("math/student", wanted)
    assert found is None and "differs in spec.sft.steps" in why
    wanted = shipped.recipe(CONFIG["task_settings"]["math"]["student"], "another-data-hash", math_inputs / "tokenizer")
    found, why = shipped.find("math/student", wanted)
    assert found is None and "dataset_hash" in why
    assert shipped.find("nosuchtask/student", wanted) == (None, "no shipped model nosuchtask/student")


def test_a_mismatch_trains_and_says_why_in_model_json(math_inputs, tmp_path, monkeypatch):
    import opdbench.models.sft as sft

    config = json.loads(json.dumps(CONFIG))
    config["task_settings"]["math"]["student"]["sft"]["steps"] = 2  # another recipe: trained here (briefly)
    build_model(config, "math", "student", math_inputs / "data", math_inputs / "tokenizer", tmp_path / "student")
    manifest = json.loads((tmp_path / "student" / "model.json").read_text())
    assert "differs in spec.sft.steps" in manifest["shipped"]["skipped"] and "from" not in manifest["shipped"]
    assert len(manifest["sft_curve"]) >= 1


def test_tiny_models_train_trains_even_where_a_shipped_model_matches(math_inputs, tmp_path, monkeypatch):
    import opdbench.models.sft as sft

    def stop(*args, **kwargs):
        raise RuntimeError("trained")
    monkeypatch.setattr(sft, "train_sft", stop)
    with pytest.raises(RuntimeError, match="trained"):
        build_model({**CONFIG, "tiny_models": "train"}, "math", "student", math_inputs / "data",
                    math_inputs / "tokenizer", tmp_path / "student")


def test_damaged_shipped_weights_stop_the_install(tmp_path):
    copy = tmp_path / "math" / "student"
    shutil.copytree(shipped.SHIPPED_DIR / "math" / "student", copy)
    for name in ("model.safetensors", "chat_template.jinja"):  # the weights, or any other file shipped
        damaged = copy / name
        original = damaged.read_bytes()
        damaged.write_bytes(original[:-1] + b"\0")
        with pytest.raises(RuntimeError, match=f"{name} has sha256 .* the checkout is damaged"):
            shipped.install(copy, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        damaged.write_bytes(original)


def test_a_model_installed_from_the_shipped_ones_cannot_be_shipped_again(math_inputs, tmp_path):
    build_model(CONFIG, "math", "teacher", math_inputs / "data", math_inputs / "tokenizer", tmp_path / "teacher")
    with pytest.raises(ValueError, match="installed from assets/tiny_models/math/teacher"):
        shipped.ship(tmp_path / "teacher", "math/teacher", math_inputs / "tokenizer", root=tmp_path / "assets")

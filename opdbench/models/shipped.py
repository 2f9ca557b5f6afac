"""The tiny base models shipped with the suite (``assets/tiny_models/<task>/<role>/``).

A tiny teacher and student trained on another machine come out with other weights (its
kernels differ in the last bits), and what distillation makes of two such students differs
by more than a method's seed std on long problems (docs/reproducibility.md). At paper scale
every machine distils from the same hub weights; at tiny scale these shipped weights play
that part, so two leaderboards of the same config differ only by the distillation's own
kernels. They are used only where they are what the workflow would train: the same model
spec (arch, sft), the same training data (its hash) and the same tokenizer (its sha256),
otherwise the model is trained as before, and the log and model.json say why. ``tiny_models:
train`` trains them regardless; ``tools/ship_tiny_models.py`` replaces them after a recipe change.
As the model rule itself (its params are the spec), an edit of the SFT code is not part of the
recipe: reship after one that changes what SFT computes (the shipped model.json records the commit
that trained it, ``trained.code_version``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from opdbench.data.resources import sha256_of
from opdbench.provenance import write_json

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "assets" / "tiny_models"
MODES = ("shipped", "train")
# What a shipped directory holds besides model.json (HF's save_pretrained of model and tokenizer).
FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja")


def tokenizer_files(tokenizer_dir: str | Path) -> dict[str, str]:
    """sha256 of each file of a tokenizer directory (vocabulary, special tokens, chat template)."""
    return {f.name: sha256_of(f) for f in sorted(Path(tokenizer_dir).iterdir())
            if f.is_file() and not f.name.startswith(".")}


def recipe(spec: dict[str, Any], dataset_hash: str, tokenizer_dir: str | Path) -> dict[str, Any]:
    """What determines a tiny model's weights on one machine: its spec, its data, its tokenizer."""
    return {"spec": {k: spec[k] for k in ("source", "arch", "sft")}, "dataset_hash": dataset_hash,
            "tokenizer": tokenizer_files(tokenizer_dir)}



def recipe_differences(shipped: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The recipe's keys (dotted) where the shipped model and the wanted one differ."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out
    a, b = flat(shipped), flat(wanted)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def find(name: str, wanted: dict[str, Any], root: Path = SHIPPED_DIR) -> tuple[Path | None, str]:
    """The shipped model ``<root>/<name>`` if its recipe is ``wanted``, else (None, why not)."""
    manifest = root / name / "model.json"
    if not manifest.exists():
        return None, f"no shipped model {name}"
    differences = recipe_differences(json.loads(manifest.read_text())["recipe"], wanted)
    if differences:
        return None, f"the shipped model {name} has another recipe (differs in {', '.join(differences)})"
    return root / name, f"the shipped model {name} (same spec, data and tokenizer)"


def install(shipped: Path, out_dir: Path) -> dict[str, Any]:
    """Copy a shipped model's files into ``out_dir`` (model.json is the caller's) after checking
    its weights against the sha256 it was shipped with; returns its shipped model.json."""
    info = json.loads((shipped / "model.json").read_text())
    for name, expected in info["files"].items():
        actual = sha256_of(shipped / name)
        if actual != expected:
            raise RuntimeError(f"{shipped}/{name} has sha256 {actual[:12]}, shipped as {expected[:12]}: the "
                               f"checkout is damaged (git checkout -- {shipped})")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(shipped / name, out_dir / name)
    return info


def ship(model_dir: Path, name: str, tokenizer_dir: Path, root: Path = SHIPPED_DIR) -> Path:
    """Copy a trained tiny model of the workflow (``results/.../models/<task>/<role>``) into
    ``<root>/<name>`` with its recipe and its training provenance."""
    trained = json.loads((model_dir / "model.json").read_text())
    if trained.get("source") != "tiny" or trained.get("weights") != ".":
        raise ValueError(f"{model_dir}: only a tiny model trained by the workflow can be shipped")
    if "from" in trained.get("shipped", {}):
        raise ValueError(f"{model_dir}: this model was itself installed from {trained['shipped']['from']}")
    out = root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for file in FILES:
        shutil.copyfile(model_dir / file, out / file)
    info = {"recipe": recipe(trained, trained["dataset_hash"], tokenizer_dir),
            "files": {file: sha256_of(out / file) for file in FILES},
            "trained": {k: trained[k] for k in ("code_version", "libraries", "machine", "parameters", "sft_seconds",
                                                "sft_curve")}}
    write_json(out / "model.json", info)
    return out

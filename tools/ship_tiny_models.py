"""Replace the shipped tiny base models (assets/tiny_models/) with those of a results directory,
after the tiny recipe changed (config/config.yaml's task_settings.<task>.{teacher,student}, the
data generator or the tokenizer). Train them first with ``tiny_models: train``:

    snakemake --cores all --config tiny_models=train -- results/tiny/models/math/quality_gate.json \
        results/tiny/models/code/quality_gate.json
    python tools/ship_tiny_models.py results/tiny

Each shipped model keeps its recipe (spec, data hash, tokenizer sha256), its weights' sha256 and
the machine and libraries it was trained with (model.json). Commit assets/tiny_models/ with the
recipe change; tests/test_shipped_models.py checks the two agree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opdbench.models.shipped import SHIPPED_DIR, ship  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results directory of the tiny config (results/tiny)")
    args = parser.parse_args()
    models = args.results / "models"
    shipped = 0
    for manifest in sorted(models.glob("*/*/model.json")) + sorted(models.glob("*/*/*/model.json")):
        model_dir = manifest.parent
        if "teachers" in manifest.read_text():  # a teacher per domain: its domains' own directories ship
            continue
        task = model_dir.relative_to(models).parts[0]
        out = ship(model_dir, str(model_dir.relative_to(models)), models / task / "tokenizer")
        print(f"shipped {model_dir} -> {out}")
        shipped += 1
    if not shipped:
        sys.exit(f"no trained model under {models}/<task>/<role>/model.json")
    print(f"{shipped} models in {SHIPPED_DIR}")


if __name__ == "__main__":
    main()

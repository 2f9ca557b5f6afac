"""The declared per-step metrics schema (opdbench.train.metrics_schema): real local-engine
rows of every method have exactly its keys and types, and every key a reader uses is declared."""
from __future__ import annotations

import pytest

from opdbench.config import deep_update, load_yaml, resolve_run
from opdbench.train import metrics_schema
from opdbench.train.engines.local import LocalEngine
from opdbench.errors import ConfigError
from opdbench.registry import get_method_class, load_methods

from conftest import METHODS_DIR, MICRO_CONFIG, REPO

CONFIG = load_yaml(REPO / "config" / "config.yaml")


def test_every_key_a_reader_uses_is_declared():
    from opdbench.report.figures import CURVES
    from opdbench.report.paper_tables import load_paper_tables, measured_metrics

    readers = [k for k, _ in CURVES] + measured_metrics(load_paper_tables())
    assert readers and all(metrics_schema.declared(k) is not None for k in readers), readers
    with pytest.raises(KeyError, match="not a declared metrics.jsonl key"):
        metrics_schema.key("entropy_mean_of_nothing")


def test_a_paper_table_reading_an_undeclared_metric_is_refused(tmp_path):
    from opdbench.report.paper_tables import TABLES_DIR, load_paper_tables

    text = (TABLES_DIR / "reopold_table2_math.yaml").read_text()
    assert "metric: retention" in text
    (tmp_path / "t.yaml").write_text(text.replace("metric: retention", "metric: retension"))
    with pytest.raises(ConfigError, match="setup.measured.*unknown metrics.jsonl key 'retension'. Did you mean "
                                          "'retention'"):
        load_paper_tables(tmp_path)


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """Two steps of every method on untrained micro models: {method: metrics rows}."""
    from opdbench.models import build_tiny_model, load_tokenizer
    from opdbench.pipeline import build_tokenizer, load_task
    from opdbench.tasks.base import read_jsonl

    root = tmp_path_factory.mktemp("schema")
    config = deep_update(deep_update(CONFIG, load_yaml(MICRO_CONFIG)),
                         {"base": {"steps": 2, "retention_every": 1, "checkpoint_every": 1}})
    task = load_task(config, "math")
    task.write_data(root / "data", 0)
    build_tokenizer(config, "math", root / "data", root / "tok")
    tok = load_tokenizer(root / "tok")
    for role in ("student", "teacher"):
        build_tiny_model(config["task_settings"]["math"][role]["arch"], tok, seed=0).save_pretrained(root / role)
        tok.save_pretrained(root / role)
    rows = read_jsonl(root / "data" / "train.jsonl")
    out = {}
    for name in sorted(load_methods(METHODS_DIR)):
        run = resolve_run(config, "math", name, 0, METHODS_DIR)
        method = get_method_class(name, METHODS_DIR)(run["hparams"], run["train"], 0)
        out[name] = LocalEngine(run, task, rows, str(root / "student"), str(root / "teacher"), method,
                                root / name).train()
    return out


def test_local_engine_rows_have_exactly_the_declared_keys_and_types(local_rows):
    conditional = {"teacher_token_fraction": "tropd", "train_accuracy": "uniopd"}
    for name, rows in local_rows.items():
        for row in rows:
            assert metrics_schema.row_problems(row) == [], (name, row)
            assert "retention" in row  # retention_every 1
            for key, method in conditional.items():
                assert (key in row) == (name == method), (name, key)
            means = {k for k in row if k.endswith("_mean")}
            assert {"credit_mean", "clip_frac_mean", "ratio_mean"} <= means, name
    # A row's key outside the schema, or of another type, is reported.
    row = dict(local_rows["opd"][0], extra=1.0, loss=1)
    assert sorted(metrics_schema.row_problems(row)) == ["'loss' is int, declared float", "undeclared key 'extra'"]
    del row["entropy"]
    assert "'entropy' (every step) is missing" in metrics_schema.row_problems(row)
    timings = {k for rows in local_rows.values() for r in rows for k in r if metrics_schema.is_timing(k)}
    assert timings == {"seconds_generation", "seconds_student_scoring", "seconds_teacher",
                       "seconds_reference_and_verifier", "seconds_update"}

"""The published tables: every shipped file is valid and names runnable methods; a bad
file is named with its key; the rendering puts the right numbers beside each row and
measures order agreement correctly."""
import json
import math

import pandas as pd
import pytest
import yaml

from conftest import METHODS_DIR, REPO
from opdbench.config import load_yaml
from opdbench.errors import ConfigError
from opdbench.report.figures import read_curves
from opdbench.report.paper_tables import (TABLES_DIR, load_paper_tables, measured_diagnostics, published_score, render_table,
                                   write_paper_tables)
from opdbench.registry import load_methods


def known_runs():
    return [*load_methods(METHODS_DIR), *load_yaml(REPO / "config" / "config.yaml")["variants"]]


def table(**over):
    t = {"paper": "REOPOLD", "citation": "Ko et al., 2026", "source": "seeds/000, Table 1", "verified": True,
         "caption": "Math results.", "setup": {"task": "math", "metric": "Avg@32"},
         "columns": ["MATH500", "AIME24", "Avg."],
         "rows": [{"label": "Student", "method": None, "role": "student", "values": {"MATH500": 50.0, "Avg.": 30.0}},
                  {"label": "OPD", "method": "opd", "role": "method", "values": {"MATH500": 60.0, "Avg.": 40.0}},
                  {"label": "EOPD", "method": "eopd", "role": "method", "values": {"MATH500": 61.0, "Avg.": 42.0}},
                  {"label": "REOPOLD", "method": "reopold", "role": "method",
                   "values": {"MATH500": 65.0, "AIME24": 20.0, "Avg.": 45.0}},
                  {"label": "GRPO", "method": None, "role": "baseline", "values": {"MATH500": 55.0}}]}
    t.update(over)
    return t


def summary(avg_by_model: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """A leaderboard.csv as the leaderboard writes it: math_id and math_long Avg@8 per model."""
    rows = []
    for model, values in avg_by_model.items():
        for bench, v in zip(("math_id", "math_long"), values):
            rows.append({"task": "math", "model": model, "kind": "method", "benchmark": bench, "avg@8_mean": v})
    return pd.DataFrame(rows)


def write(tmp_path, name, t):
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(t, sort_keys=False))


def test_every_shipped_table_is_valid_and_names_runnable_methods():
    tables = load_paper_tables(TABLES_DIR, known_runs())
    if not tables:
        pytest.skip("paper_tables/ holds no tables yet")
    for name, t in tables.items():
        assert any(row["values"] for row in t["rows"]), name


def test_declared_average_columns_are_the_mean_of_the_other_cells():
    """A transcription check: where a paper prints an average of a row's columns, the
    transcribed cells must reproduce it (to the printed two decimals)."""
    checked = 0
    for name, t in load_paper_tables(TABLES_DIR).items():
        average = t["setup"].get("average_column")
        for row in t["rows"] if average else []:
            cells = [v for c, v in row["values"].items() if c != average]
            if average in row["values"] and len(cells) == len(t["columns"]) - 1:
                assert sum(cells) / len(cells) == pytest.approx(row["values"][average], abs=0.011), (name, row["label"])
                checked += 1
    if not checked:
        pytest.skip("no table declares an average column")


def test_a_bad_table_names_its_file_and_key(tmp_path):
    write(tmp_path, "bad", table(verified="yes"))
    with pytest.raises(ConfigError, match=r"bad.yaml: config key 'verified'"):
        load_paper_tables(tmp_path)


def test_an_unknown_method_lists_the_runnable_names(tmp_path):
    rows = table()["rows"]
    rows[1]["method"] = "opdd"
    write(tmp_path, "t1", table(rows=rows))
    with pytest.raises(ConfigError, match=r"t1.yaml: rows.1 \(OPD\): unknown method 'opdd'. Did you mean 'opd'\?.*eopd"):
        load_paper_tables(tmp_path, known_runs())


def test_a_value_for_an_undeclared_column_is_named(tmp_path):
    rows = table()["rows"]
    rows[2]["values"]["AIME25"] = 1.0
    write(tmp_path, "t1", table(rows=rows))
    with pytest.raises(ConfigError, match=r"rows.2 \(EOPD\) has values for undeclared columns \['AIME25'\]"):
        load_paper_tables(tmp_path)


def test_published_score_is_the_average_column_else_the_mean_of_non_pass_cells():
    t = table()
    assert published_score(t, t["rows"][3]) == 45.0
    pairs = table(columns=["MATH500 Avg@8", "MATH500 Pass@8", "AMC23 Avg@8", "AMC23 Pass@8"])
    row = {"label": "OPD", "role": "method", "values": {"MATH500 Avg@8": 67.76, "MATH500 Pass@8": 84.8,
                                                        "AMC23 Avg@8": 39.06, "AMC23 Pass@8": 70.0}}
    assert published_score(pairs, row) == pytest.approx((67.76 + 39.06) / 2)
    assert published_score(pairs, {"label": "x", "role": "method", "values": {}}) is None


def test_rendering_places_each_rows_numbers_and_measures_order_agreement():
    # This run orders opd < eopd < reopold, as the paper does: rho = 1 (the student is shown, not ranked).
    same = summary({"student": (0.30, 0.10), "opd": (0.34, 0.12), "eopd": (0.35, 0.13), "reopold": (0.40, 0.20),
                    "teacher": (0.99, 0.18)})
    text, row = render_table("reopold_table1", table(), same)
    assert row["rows_compared"] == 3 and row["spearman_rho"] == pytest.approx(1.0)
    assert "| Student | student | 50.00 |  | 30.00 | 30.00 | 30.0 | 10.0 | 20.0 |" in text
    assert "| REOPOLD | reopold | 65.00 | 20.00 | 45.00 | 45.00 | 40.0 | 20.0 | 30.0 |" in text  # published as printed
    assert "| GRPO |  | 55.00 |  |  |  |  |  |  |" in text  # a baseline the suite does not run; no Avg. cell
    # Published ranks 1,2,3 (opd, eopd, reopold) against 3,1,2 here: d = 2,1,1.
    shuffled = summary({"student": (0.30, 0.10), "opd": (0.40, 0.20), "eopd": (0.34, 0.12), "reopold": (0.35, 0.13)})
    _, row = render_table("reopold_table1", table(), shuffled)
    assert row["spearman_rho"] == pytest.approx(1 - 6 * (4 + 1 + 1) / (3 * (3 ** 2 - 1)))


def test_a_table_of_another_task_or_with_too_few_rows_says_so(tmp_path):
    text, row = render_table("t", table(setup={"task": "visual"}), summary({"opd": (0.3, 0.1)}))
    assert "Task 'visual' is not in this experiment" in text and math.isnan(row["spearman_rho"])
    text, row = render_table("t", table(), summary({"opd": (0.3, 0.1), "eopd": (0.2, 0.1), "student": (0.2, 0.1)}))
    assert "2 of its method rows ran in this experiment: too few" in text and row["rows_compared"] == 2
    text, row = render_table("t", table(setup={"task": "math", "diagnostic": True}), summary({"opd": (0.3, 0.1)}))
    assert "A training diagnostic" in text and "(this run)" not in text and row["rows_compared"] == 0
    csv = tmp_path / "leaderboard.csv"
    summary({"opd": (0.3, 0.1)}).to_csv(csv, index=False)
    write_paper_tables({"t": table()}, csv, tmp_path / "t.md", tmp_path / "t.csv", "tiny")
    assert pd.read_csv(tmp_path / "t.csv").rows_compared.tolist() == [1]


def diagnostic_table():
    return table(setup={"task": "math", "diagnostic": True,
                        "measured": {"Bottom ~1%": {"metric": "energy_share_bottom1", "steps": [0, 1], "scale": 100},
                                     "Step 300": {"metric": "retention", "steps": ["last", "last"]}}},
                 columns=["Bottom ~1%", "Step 300"],
                 rows=[{"label": "Standard OPD", "method": "opd", "role": "method",
                        "values": {"Bottom ~1%": 95.9, "Step 300": -2.841}}])


def test_a_diagnostic_table_shows_this_experiments_measured_columns(tmp_path):
    # Two seeds of opd, three steps each; retention logged on steps 0 and 2 only.
    for seed, (shares, last_retention) in enumerate([((0.90, 0.80, 0.10), -2.0), ((0.70, 0.60, 0.20), -3.0)]):
        run = tmp_path / "train" / "math" / "opd" / f"seed{seed}"
        run.mkdir(parents=True)
        rows = [{"step": k, "energy_share_bottom1": v, **({"retention": -1.0 if k == 0 else last_retention}
                                                          if k != 1 else {})} for k, v in enumerate(shares)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = sorted(tmp_path.glob("train/*/*/seed*/metrics.jsonl"))
    curves = read_curves(files, ["energy_share_bottom1", "retention"])
    measured = measured_diagnostics(diagnostic_table(), curves)
    # Steps 0-1: seed 0 (0.90 + 0.80) / 2, seed 1 (0.70 + 0.60) / 2; mean x 100 = 75. Last step: (-2 - 3) / 2.
    assert measured == {"opd": {"Bottom ~1%": pytest.approx(75.0), "Step 300": pytest.approx(-2.5)}}
    text, row = render_table("reopold_table1", diagnostic_table(), summary({"opd": (0.3, 0.1)}), curves)
    assert "| Standard OPD | opd | 95.90 | -2.84 |  | 75.00 | -2.50 |" in text  # no published score
    assert "Bottom ~1%: energy_share_bottom1 over steps 0-1, x 100; Step 300: retention over the last step" in text
    assert row["rows_compared"] == 0 and math.isnan(row["spearman_rho"])
    # A metric the runs did not log in the window leaves the cell empty, not zero.
    t = diagnostic_table()
    t["setup"]["measured"]["Step 300"]["steps"] = [1, 1]
    assert measured_diagnostics(t, curves) == {"opd": {"Bottom ~1%": pytest.approx(75.0)}}


def test_a_measured_column_the_table_does_not_have_is_named(tmp_path):
    t = diagnostic_table()
    t["setup"]["measured"]["Bottom ~2%"] = t["setup"]["measured"].pop("Bottom ~1%")
    write(tmp_path, "t1", t)
    with pytest.raises(ConfigError, match=r"t1.yaml: setup.measured names columns \['Bottom ~2%'\]"):
        load_paper_tables(tmp_path)
    t = diagnostic_table()
    t["setup"]["diagnostic"] = False
    write(tmp_path, "t1", t)
    with pytest.raises(ConfigError, match=r"setup.measured is for diagnostic tables"):
        load_paper_tables(tmp_path)

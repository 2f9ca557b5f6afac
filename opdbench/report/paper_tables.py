"""The papers' published tables next to this experiment's numbers.

Each ``paper_tables/*.yaml`` holds one published results table (schema:
``workflow/schemas/paper_table.schema.yaml``; conventions: ``paper_tables/README.md``).
A row names the suite's method or variant it is (``method``), or that it is the base
student or the teacher (``role``). The rendering puts the published numbers beside the
experiment's Avg@N for the same rows and says how well the two orders of the methods agree
(Spearman's rho over the method rows both have; the base student and teacher are shown but
not ranked, since student < methods < teacher would make any two orders look alike). At tiny scale the benchmarks differ from the
papers', so only the order can be compared; at paper scale the numbers themselves.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from opdbench.atomic import atomic_path, atomic_write_text
from opdbench.config import first_schema_error, load_yaml
from opdbench.report.leaderboard import per_row
from opdbench.train import metrics_schema
from opdbench.errors import ConfigError, unknown_name_error

REPO = Path(__file__).resolve().parents[2]
TABLES_DIR = REPO / "paper_tables"
SCHEMA_PATH = REPO / "workflow" / "schemas" / "paper_table.schema.yaml"
# A published row's score for ranking: the table's own average column when it has one.
AVERAGE_COLUMN = re.compile(r"^(avg|average|mean)\b", re.IGNORECASE)
ROLE_MODELS = {"student": "student", "teacher": "teacher"}  # leaderboard model of a reference row


def load_paper_tables(directory: str | Path = TABLES_DIR, known_runs: Iterable[str] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """Every table file of ``directory`` by name, validated: the schema, values only for
    declared columns, and (given ``known_runs``) each row's ``method`` a runnable name."""
    schema = load_yaml(SCHEMA_PATH)
    known = sorted(known_runs) if known_runs is not None else None
    tables = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        table = load_yaml(path)
        message = first_schema_error(schema, table)
        if message:
            raise ConfigError(f"{path.name}: {message}")
        _check_declared(path, table, table["setup"].get("measured", {}), "setup.measured names columns")
        if table["setup"].get("measured") and not table["setup"].get("diagnostic"):
            raise ConfigError(f"{path.name}: setup.measured is for diagnostic tables (setup.diagnostic: true)")
        for column, m in table["setup"].get("measured", {}).items():
            if metrics_schema.declared(m["metric"]) is None:
                raise ConfigError(f"{path.name}: setup.measured.{column}.metric: "
                                  f"{unknown_name_error('metrics.jsonl key', m['metric'], metrics_schema.KEYS)}")
        average = table["setup"].get("average_column")
        if average is not None and average not in table["columns"]:
            raise ConfigError(f"{path.name}: setup.average_column '{average}' is not one of the columns")
        for i, row in enumerate(table["rows"]):
            _check_declared(path, table, row["values"], f"rows.{i} ({row['label']}) has values for undeclared columns")
            if known is not None and row.get("method") is not None and row["method"] not in known:
                raise ConfigError(f"{path.name}: rows.{i} ({row['label']}): "
                                  f"{unknown_name_error('method', row['method'], known)}")
        tables[path.stem] = table
    return tables


def _check_declared(path: Path, table: dict[str, Any], names: Iterable[str], what: str) -> None:
    stray = sorted(set(names) - set(table["columns"]))
    if stray:
        raise ConfigError(f"{path.name}: {what} {stray}; columns: {', '.join(table['columns'])}")


def published_score(table: dict[str, Any], row: dict[str, Any]) -> float | None:
    """The row's average column (``setup.average_column``, else one named Avg/Average/Mean)
    if the table has one, else the mean of its cells that are not Pass@k (a table of
    Avg@k / Pass@k pairs ranks by Avg@k)."""
    values = row["values"]
    declared = table["setup"].get("average_column")
    averages = [declared] if declared else [
        c for c in table["columns"] if AVERAGE_COLUMN.match(c) and "pass" not in c.lower()]
    if averages:
        return values.get(averages[0])
    cells = [v for c, v in values.items() if "pass" not in c.lower()]
    return sum(cells) / len(cells) if cells else None


def row_model(row: dict[str, Any]) -> str | None:
    """The leaderboard model a published row corresponds to, if any."""
    return ROLE_MODELS.get(row["role"]) or row.get("method")


def reproduced(summary: pd.DataFrame, task: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """model x benchmark table of the experiment's Avg@N means (in %) for one task, and
    each benchmark's metric name (avg@N, N being the benchmark's samples per problem: of
    a leaderboard.csv's avg@N columns, the one its rows fill)."""
    s = summary[summary.task == task]
    columns = [c for c in s.columns if re.fullmatch(r"avg@\d+_mean", c)]
    filled = s[columns].notna()
    per_bench = filled.groupby(s.benchmark, sort=False).all()
    avg = {b: next(c for c in columns if per_bench.loc[b, c]) for b in per_bench.index}
    values = s.assign(avg=per_row(s, s.benchmark.map(avg)))
    return (values.pivot(index="model", columns="benchmark", values="avg") * 100.0,
            {b: c.split("_")[0] for b, c in avg.items()})


def measured_metrics(tables: dict[str, dict[str, Any]]) -> list[str]:
    """The metrics.jsonl keys the diagnostic tables' ``setup.measured`` read."""
    return sorted({m["metric"] for t in tables.values() for m in t["setup"].get("measured", {}).values()})


def measured_diagnostics(table: dict[str, Any], curves: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """run -> column -> this experiment's value of a diagnostic table's ``setup.measured``
    columns: per seed the metric's mean over the step window, then the mean over seeds.
    A run that did not log the metric in the window has no value for the column."""
    spec, task = table["setup"].get("measured", {}), table["setup"]["task"]
    if curves is None or not spec:
        return {}
    out = {}
    for run, per_run in curves[curves.task == task].groupby("run"):
        values = {}
        for column, m in spec.items():
            per_seed = []
            for _, s in per_run.groupby("seed"):
                lo, hi = (int(s.step.max()) if x == "last" else x for x in m["steps"])
                window = pd.to_numeric(s[(s.step >= lo) & (s.step <= hi)][m["metric"]], errors="coerce").dropna()
                if len(window):
                    per_seed.append(window.mean())
            if per_seed:
                values[column] = sum(per_seed) / len(per_seed) * m.get("scale", 1.0)
        out[run] = values
    return out


def _window(steps: list) -> str:
    lo, hi = steps
    if lo == hi:
        return "the last step" if lo == "last" else f"step {lo}"
    return f"steps {lo} to the last" if hi == "last" else f"steps {lo}-{hi}"


def _cell(value: Any, decimals: int = 1) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.{decimals}f}"


def render_table(name: str, table: dict[str, Any], summary: pd.DataFrame, curves: pd.DataFrame | None = None
                 ) -> tuple[str, dict[str, Any]]:
    """Markdown for one table (published cells, then this experiment's: Avg@N per benchmark,
    or a diagnostic table's measured columns from ``curves``) and its agreement row."""
    task, columns = table["setup"]["task"], table["columns"]
    setup = "; ".join(f"{k}: {v}" for k, v in table["setup"].items() if k not in ("notes", "average_column", "diagnostic", "measured"))
    lines = [f"### {table['paper']}: {name}", "", table["caption"], "",
             f"Source: {table['source']} ({'verified against the paper' if table['verified'] else 'NOT verified: a secondary summary'}). "
             f"Setup: {setup}.", ""]
    diagnostic = table["setup"].get("diagnostic", False)
    ran = task in set(summary.task) and not diagnostic
    repro, metric = reproduced(summary, task) if ran else (pd.DataFrame(), {})
    benches = list(repro.columns)
    measured = measured_diagnostics(table, curves) if diagnostic else {}
    spec = table["setup"].get("measured", {}) if measured else {}
    header = ["row", "suite run", *columns, "published score", *(f"{b} {metric[b]} (this run)" for b in benches),
              *(f"{c} (this run)" for c in spec), *([] if spec else ["this run's mean"])]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    pairs = []
    for row in table["rows"]:
        model = row_model(row)
        score = None if diagnostic else published_score(table, row)  # a diagnostic's cells are not a score
        mine = repro.loc[model] if model in repro.index else None
        cells = [row["label"], model or "", *(_cell(row["values"].get(c), 2) for c in columns), _cell(score, 2)]
        cells += [_cell(mine[b]) if mine is not None else "" for b in benches]
        if spec:
            cells += [_cell(measured.get(model, {}).get(c), 2) for c in spec]
        else:
            cells.append(_cell(mine.mean()) if mine is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
        if row["role"] == "method" and mine is not None and score is not None:
            pairs.append((score, mine.mean()))  # the methods' order (student < methods < teacher says little)
    # Spearman's rho: Pearson's r of the ranks (pandas' own "spearman" needs scipy).
    published, ours = pd.Series([p for p, _ in pairs]), pd.Series([m for _, m in pairs])
    rho = published.rank().corr(ours.rank()) if len(pairs) >= 3 else float("nan")
    lines.append("")
    if spec:
        how = "; ".join(f"{c}: {m['metric']} over {_window(m['steps'])}" + (f", x {m['scale']:g}" if "scale" in m else "")
                        for c, m in spec.items())
        lines.append(f"A training diagnostic, not accuracy. This run's columns, from each run's metrics.jsonl "
                     f"(mean over the steps, then over seeds): {how}.")
    elif diagnostic:
        lines.append("A training diagnostic, not accuracy: this run's counterparts are in each run's metrics.jsonl "
                     f"and figures/{task}_training_curves.png.")
    elif not ran:
        lines.append(f"Task '{task}' is not in this experiment: published numbers only.")
    elif len(pairs) < 3:
        lines.append(f"{len(pairs)} of its method rows ran in this experiment: too few to compare orders.")
    else:
        lines.append(f"Order agreement over the {len(pairs)} method rows that ran: Spearman's rho = {rho:.2f} "
                     "(1: this run orders the methods as the paper does).")
    note = table["setup"].get("notes")
    if note:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n", {"table": name, "paper": table["paper"], "task": task,
                                     "verified": table["verified"], "rows_compared": len(pairs), "spearman_rho": rho}


def write_paper_tables(tables: dict[str, dict[str, Any]], leaderboard_csv: str | Path, out_md: str | Path,
                       out_csv: str | Path, experiment: str, metrics_files: Iterable[str | Path] = ()) -> None:
    from opdbench.report.figures import read_curves

    summary = pd.read_csv(leaderboard_csv)
    metrics_files, keys = list(metrics_files), measured_metrics(tables)
    curves = read_curves(metrics_files, keys) if metrics_files and keys else None  # only what a table reads
    sections, agreement = [], []
    for name, table in tables.items():
        text, row = render_table(name, table, summary, curves)
        sections.append(text)
        agreement.append(row)
    head = (f"# The papers' tables next to experiment {experiment}\n\n"
            "Published cells as printed; 'published score' is the table's average column (or the mean of its "
            "non-Pass@k cells); the experiment's columns are its own benchmarks' Avg@N in %, mean over seeds.\n\n")
    atomic_write_text(out_md, head + "\n".join(sections))
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(agreement, columns=["table", "paper", "task", "verified", "rows_compared", "spearman_rho"]
                     ).to_csv(tmp, index=False)

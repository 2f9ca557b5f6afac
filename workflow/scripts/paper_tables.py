from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.paper_tables import load_paper_tables, write_paper_tables
from opdbench.registry import load_methods

tee_to_log(snakemake.log[0])
methods_dir = Path(snakemake.scriptdir).resolve().parents[1] / snakemake.config["methods_dir"]  # relative to the workflow
runs = [*load_methods(methods_dir), *snakemake.config.get("variants", {})]
tables = load_paper_tables(Path(snakemake.input.tables[0]).parent, known_runs=runs)
write_paper_tables(tables, snakemake.input.leaderboard, snakemake.output.md, snakemake.output.csv,
                   snakemake.config["experiment"],
                   metrics_files=[Path(run).with_name("metrics.jsonl") for run in snakemake.input.runs])

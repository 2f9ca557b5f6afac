from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.report.paper_tables import load_paper_tables, write_paper_tables
from opdbench.registry import load_methods, script_methods_dir

tee_to_log(snakemake.log[0])
runs = [*load_methods(script_methods_dir(snakemake.config, snakemake.scriptdir)), *snakemake.config.get("variants", {})]
tables = load_paper_tables(Path(snakemake.input.tables[0]).parent, known_runs=runs)
write_paper_tables(tables, snakemake.input.leaderboard, snakemake.output.md, snakemake.output.csv,
                   snakemake.config["experiment"],
                   metrics_files=[Path(run).with_name("metrics.jsonl") for run in snakemake.input.runs])

from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.report.cost import cost_rows, read_benchmark, write_cost_table

tee_to_log(snakemake.log[0])
root = Path(snakemake.output[0]).parent.parent / "benchmarks"  # results/<experiment>/benchmarks
benchmarks = {str(Path(path).relative_to(root).with_suffix("")): read_benchmark(path)
              for path in snakemake.params.benchmarks if Path(path).exists()}
jobs = cost_rows(snakemake.input.runs, snakemake.input.evaluations, snakemake.params.measured, benchmarks)
table = write_cost_table(snakemake.output[0], jobs)
print(table[table.model == "total"].to_string(index=False))

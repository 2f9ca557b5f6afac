from opdbench.report.leaderboard import write_leaderboard
from opdbench.logs import tee_to_log

tee_to_log(snakemake.log[0])
write_leaderboard(snakemake.input.evaluations, snakemake.output.md, snakemake.output.csv, snakemake.config,
                  runs=snakemake.input.runs)

from opdbench.report.figures import plot_leaderboard_deltas
from opdbench.logs import tee_to_log

tee_to_log(snakemake.log[0])
plot_leaderboard_deltas(snakemake.input[0], snakemake.output[0],
                        f"{snakemake.config['experiment']}: change against the base student")

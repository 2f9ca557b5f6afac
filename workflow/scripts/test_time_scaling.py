from opdbench.atomic import atomic_path
from opdbench.report.figures import plot_test_time_scaling, read_scaling, summarize_scaling
from opdbench.logs import tee_to_log

tee_to_log(snakemake.log[0])
summary = summarize_scaling(read_scaling(snakemake.input))
with atomic_path(snakemake.output.csv) as tmp:
    summary.to_csv(tmp, index=False)
plot_test_time_scaling(summary, snakemake.output.png,
                       f"{snakemake.config['experiment']}: {snakemake.wildcards.task} test-time scaling")

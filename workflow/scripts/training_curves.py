from pathlib import Path

from opdbench.report.figures import plot_training_curves
from opdbench.logs import tee_to_log

tee_to_log(snakemake.log[0])
plot_training_curves([Path(run).with_name("metrics.jsonl") for run in snakemake.input], snakemake.output[0],
                     f"{snakemake.config['experiment']}: {snakemake.wildcards.task} training curves")

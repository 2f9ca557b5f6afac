from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.pipeline import train

tee_to_log(snakemake.log[0])
w = snakemake.wildcards
train(snakemake.config, w.task, w.run, int(w.seed), Path(snakemake.input.data).parent,
      Path(snakemake.input.student).parent, Path(snakemake.input.teacher).parent,
      Path(snakemake.output.run).parent, snakemake.params.methods_dir, threads=snakemake.threads)

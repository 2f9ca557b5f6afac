from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.pipeline import train

tee_to_log(snakemake.log[0])
# methods_dir is relative to the workflow's directory (two above this script's)
methods_dir = Path(snakemake.scriptdir).resolve().parents[1] / snakemake.config["methods_dir"]
w = snakemake.wildcards
train(snakemake.config, w.task, w.run, int(w.seed), Path(snakemake.input.data).parent,
      Path(snakemake.input.student).parent, Path(snakemake.input.teacher).parent,
      Path(snakemake.output.run).parent, methods_dir, threads=snakemake.threads)

from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.pipeline import evaluate

tee_to_log(snakemake.log[0])
w = snakemake.wildcards
name, _, seed = w.model.partition("/")
label = {"model": seed if name == "base" else name, "seed": None if name == "base" else int(seed[len("seed"):]),
         "kind": "reference" if name == "base" else "method"}
evaluate(snakemake.config, w.task, Path(snakemake.input.model).parent, Path(snakemake.input.data).parent,
         snakemake.output.samples, snakemake.output.metrics, label, threads=snakemake.threads)

from pathlib import Path

from opdbench.compute import gpu_slots
from opdbench.logs import tee_to_log
from opdbench.pipeline import evaluate

tee_to_log(snakemake.log[0])
w = snakemake.wildcards
model, _, seed = w.model.rpartition("/")
base = model.startswith("base/")
label = {"model": model.split("/")[1] if base else model, "seed": int(seed[len("seed"):]),
         "kind": "reference" if base else "method"}
with gpu_slots(snakemake.resources.gpu):  # this job's own GPUs of the node (CUDA_VISIBLE_DEVICES)
    evaluate(snakemake.config, w.task, Path(snakemake.input.model).parent, Path(snakemake.input.data).parent,
             snakemake.output.samples, snakemake.output.metrics, label, threads=snakemake.threads)

from pathlib import Path

from opdbench.compute import gpu_slots
from opdbench.logs import tee_to_log
from opdbench.pipeline import build_model

tee_to_log(snakemake.log[0])
with gpu_slots(snakemake.resources.gpu):  # this job's own GPUs of the node (CUDA_VISIBLE_DEVICES)
    build_model(snakemake.config, snakemake.wildcards.task, snakemake.wildcards.role, Path(snakemake.input.data).parent,
                snakemake.input.tokenizer, Path(snakemake.output[0]).parent, threads=snakemake.threads)

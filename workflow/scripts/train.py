from pathlib import Path

from opdbench.compute import gpu_slots
from opdbench.logs import tee_to_log
from opdbench.pipeline import train
from opdbench.registry import script_methods_dir

tee_to_log(snakemake.log[0])
methods_dir = script_methods_dir(snakemake.config, snakemake.scriptdir)
w = snakemake.wildcards
# this job's own GPUs of the node (CUDA_VISIBLE_DEVICES); a run over several nodes: its allocation's
with gpu_slots(snakemake.resources.gpu, nodes=snakemake.resources.nodes):
    train(snakemake.config, w.task, w.run, int(w.seed), Path(snakemake.input.data).parent,
          Path(snakemake.input.student).parent, Path(snakemake.input.teacher).parent,
          Path(snakemake.output.run).parent, methods_dir, threads=snakemake.threads)

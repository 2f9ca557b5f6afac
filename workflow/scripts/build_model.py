from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.pipeline import build_model

tee_to_log(snakemake.log[0])
build_model(snakemake.config, snakemake.wildcards.task, snakemake.wildcards.role, Path(snakemake.input.data).parent,
            snakemake.input.tokenizer, Path(snakemake.output[0]).parent, threads=snakemake.threads)

from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.pipeline import build_tokenizer

tee_to_log(snakemake.log[0])
build_tokenizer(snakemake.config, snakemake.wildcards.task, Path(snakemake.input.train).parent, snakemake.output[0])

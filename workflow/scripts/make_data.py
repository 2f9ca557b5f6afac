from opdbench.logs import tee_to_log
from opdbench.pipeline import make_data

tee_to_log(snakemake.log[0])
make_data(snakemake.config, snakemake.wildcards.task, snakemake.output.manifest.rsplit("/", 1)[0])

from opdbench.logs import tee_to_log
from opdbench.data.resources import fetch

tee_to_log(snakemake.log[0])
fetch(snakemake.wildcards.resource, snakemake.output[0])

from pathlib import Path

from opdbench.data.hub import KINDS, fetch_repo
from opdbench.logs import tee_to_log

tee_to_log(snakemake.log[0])
w = snakemake.wildcards
repo_type = {kind: repo_type for repo_type, kind in KINDS.items()}[w.kind]
fetch_repo(f"{w.org}/{w.name}", repo_type, snakemake.params.revision, Path(snakemake.output[0]).parent)

from pathlib import Path

from opdbench.logs import tee_to_log
from opdbench.provenance import stamp, write_json
from opdbench.models.quality_gate import evaluate_base_models

tee_to_log(snakemake.log[0])
out = Path(snakemake.output[0])
record = evaluate_base_models(snakemake.config, snakemake.wildcards.task, Path(snakemake.input.data).parent,
                              Path(snakemake.input.teacher).parent, Path(snakemake.input.student).parent,
                              out.parent / "quality_gate")
print(f"[gate] {record}")
write_json(out, stamp(**record))

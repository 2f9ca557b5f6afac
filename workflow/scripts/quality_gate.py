from pathlib import Path

from opdbench.compute import gpu_slots
from opdbench.logs import tee_to_log
from opdbench.provenance import stamp, write_json
from opdbench.models.quality_gate import evaluate_base_models

tee_to_log(snakemake.log[0])
out = Path(snakemake.output[0])
with gpu_slots(snakemake.resources.gpu):  # this job's own GPUs of the node (CUDA_VISIBLE_DEVICES)
    record = evaluate_base_models(snakemake.config, snakemake.wildcards.task, Path(snakemake.input.data).parent,
                                  Path(snakemake.input.teacher).parent, Path(snakemake.input.student).parent,
                                  out.parent / "quality_gate")
print(f"[gate] {record}")
write_json(out, stamp(**record))

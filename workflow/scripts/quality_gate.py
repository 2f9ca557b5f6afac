from opdbench.logs import tee_to_log
from opdbench.provenance import stamp, write_json
from opdbench.quality_gate import check_base_models

tee_to_log(snakemake.log[0])
record = check_base_models(snakemake.wildcards.task, snakemake.params.gate, snakemake.input.teacher,
                           snakemake.input.student)
print(f"[gate] {record}")
write_json(snakemake.output[0], stamp(**record))

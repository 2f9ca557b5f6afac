# OPD-Bench: one DAG trains every OPD method under unified settings, evaluates them and
# ranks them. Tiny scale by default; paper scale with --configfile config/experiments/*.yaml.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The tiny default; --configfile files are merged over it (paper scale, tests).
configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        leaderboard_outputs(),
        figure_outputs(),
    default_target: True

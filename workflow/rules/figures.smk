rule training_curves:
    """Per task, every run's training curves (entropy, reverse KL, the credit's negative
    tail and its share of the update energy, length, grad norm), mean +- std over seeds.
    Reads each run's metrics.jsonl beside its run.json (metrics.jsonl is not an output of
    `train`: Snakemake would delete it when a killed run fails, and resume needs it)."""
    input:
        lambda wildcards: run_records([wildcards.task]),
    output:
        report(f"{RESULTS}/figures/{{task}}_training_curves.png", caption="../report/training_curves.rst",
               category="Figures"),
    log:
        f"{RESULTS}/logs/figures/{{task}}_training_curves.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/training_curves.py"


rule test_time_scaling:
    """Per task, every model's Pass@K and Maj@K against the latency of K parallel samples,
    from its evaluations (mean over seeds), as a figure and a table."""
    input:
        lambda wildcards: eval_targets(wildcards.task),
    output:
        png=report(f"{RESULTS}/figures/{{task}}_test_time_scaling.png", caption="../report/test_time_scaling.rst",
                   category="Figures"),
        csv=f"{RESULTS}/tables/{{task}}_test_time_scaling.csv",
    log:
        f"{RESULTS}/logs/figures/{{task}}_test_time_scaling.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/test_time_scaling.py"


rule leaderboard_deltas:
    """Each method's change in Avg@N against the base student, per task and benchmark."""
    input:
        rules.leaderboard.output.csv,
    output:
        report(f"{RESULTS}/figures/leaderboard_deltas.png", caption="../report/leaderboard_deltas.rst",
               category="Figures"),
    log:
        f"{RESULTS}/logs/figures/leaderboard_deltas.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/leaderboard_deltas.py"


rule paper_tables:
    """Every published table of paper_tables/ beside this experiment's numbers for the same
    rows (a diagnostic table's from the runs' metrics.jsonl), and how well the two orders agree."""
    input:
        leaderboard=rules.leaderboard.output.csv,
        tables=PAPER_TABLES,
        runs=run_records(config["tasks"]),
    output:
        md=report(f"{RESULTS}/tables/paper_tables.md", caption="../report/paper_tables.rst", category="Tables"),
        csv=f"{RESULTS}/tables/order_agreement.csv",
    log:
        f"{RESULTS}/logs/tables/paper_tables.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/paper_tables.py"

rule leaderboard:
    """Mean +- std over seeds of every benchmark's Avg@N and Pass@N; rows: base student,
    teacher, each method, with the device-hours of its training runs."""
    input:
        evaluations=[target for task in config["tasks"] for target in eval_targets(task)],
        runs=run_records(config["tasks"]),
    output:
        md=report(f"{RESULTS}/leaderboard.md", caption="../report/leaderboard.rst", category="Leaderboard"),
        csv=f"{RESULTS}/leaderboard.csv",
    log:
        f"{RESULTS}/logs/leaderboard.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/leaderboard.py"


rule cost:
    """What the experiment cost: each heavy job's device-hours, wall time, peak memory, generated
    tokens and sequences, and their sums (opdbench/report/cost.py)."""
    input:
        runs=run_records(config["tasks"]),
        evaluations=[target for task in config["tasks"] for target in eval_targets(task)],
    output:
        f"{RESULTS}/tables/cost.csv",
    log:
        f"{RESULTS}/logs/tables/cost.log",
    params:
        measured=jobs_without_records(),
        # Snakemake's benchmark files (not inputs: results from before they existed stay valid)
        benchmarks=[benchmark_file(rule_name, tag) for rule_name, tag in heavy_job_tags()],
    localrule: True
    conda:
        ENV
    script:
        "../scripts/cost.py"

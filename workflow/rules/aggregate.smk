rule leaderboard:
    """Mean +- std over seeds of every benchmark's Avg@N and Pass@N; rows: base student,
    teacher, each method."""
    input:
        [target for task in config["tasks"] for target in eval_targets(task)],
    output:
        md=report(f"{RESULTS}/leaderboard.md", caption="../report/leaderboard.rst", category="Leaderboard"),
        csv=f"{RESULTS}/leaderboard.csv",
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        ENV
    script:
        "../scripts/leaderboard.py"

rule evaluate:
    """N samples per problem on every benchmark of the task, scored by its verifier."""
    input:
        data=rules.make_data.output.manifest,
        model=model_to_evaluate,
    output:
        samples=f"{RESULTS}/eval/{{task}}/{{model}}/samples.jsonl",
        metrics=f"{RESULTS}/eval/{{task}}/{{model}}/metrics.json",
    log:
        f"{RESULTS}/logs/eval/{{task}}/{{model}}.log",
    params:
        settings=eval_settings,
    wildcard_constraints:
        model=r"(base/(teacher|student)|[A-Za-z0-9_.-]+)/seed\d+",
    threads: config["threads"]
    resources:
        **heavy_job("evaluate"),
    benchmark:
        benchmark_file("evaluate", "{task}/{model}")
    conda:
        ENV
    script:
        "../scripts/evaluate.py"

rule make_data:
    """The task's train prompts (with worked solutions) and evaluation benchmarks."""
    input:
        data_resources,
    output:
        train=f"{RESULTS}/data/{{task}}/train.jsonl",
        eval=f"{RESULTS}/data/{{task}}/eval.jsonl",
        manifest=f"{RESULTS}/data/{{task}}/manifest.json",
    log:
        f"{RESULTS}/logs/data/{{task}}.log",
    params:
        settings=data_settings,
    localrule: True
    conda:
        ENV
    script:
        "../scripts/make_data.py"

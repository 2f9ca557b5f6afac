rule train:
    """Distil the teacher into the student with one method (or variant) and seed.
    Checkpoints under checkpoints/ (not an output) let a killed run resume."""
    input:
        data=rules.make_data.output.manifest,
        student=f"{RESULTS}/models/{{task}}/student/model.json",
        teacher=f"{RESULTS}/models/{{task}}/teacher/model.json",
        # The precondition: it reruns only when the models or the data change (and so does training).
        # (Not ancient(): Snakemake 9 then skips the reasons of every job downstream of a rerun gate.)
        gate=f"{RESULTS}/models/{{task}}/quality_gate.json",
    output:
        model=f"{RESULTS}/train/{{task}}/{{run}}/seed{{seed}}/model/model.json",
        run=f"{RESULTS}/train/{{task}}/{{run}}/seed{{seed}}/run.json",
    log:
        f"{RESULTS}/logs/train/{{task}}_{{run}}_seed{{seed}}.log",
    params:
        settings=run_settings,
    threads: config["threads"]
    resources:
        **heavy_job("train"),
    benchmark:
        benchmark_file("train", "{task}_{run}_seed{seed}")
    conda:
        TRAIN_ENV
    script:
        "../scripts/train.py"

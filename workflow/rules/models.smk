rule tokenizer:
    """Tiny scale: byte-level BPE trained on the task's text. Paper scale: the student's."""
    input:
        train=rules.make_data.output.train,
        hub=student_hub_record,
    output:
        directory(f"{RESULTS}/models/{{task}}/tokenizer"),
    log:
        f"{RESULTS}/logs/models/{{task}}_tokenizer.log",
    params:
        settings=tokenizer_settings,
    localrule: True
    conda:
        ENV
    script:
        "../scripts/build_tokenizer.py"


rule model:
    """Tiny scale: a Qwen2 LM trained by SFT on worked solutions (teacher larger and
    longer-trained than student). Paper scale: a pointer to the fetched hub model or local path."""
    input:
        data=rules.make_data.output.manifest,
        tokenizer=rules.tokenizer.output[0],
        hub=hub_model_record,
    output:
        f"{RESULTS}/models/{{task}}/{{role}}/model.json",
    log:
        f"{RESULTS}/logs/models/{{task}}_{{role}}.log",
    params:
        settings=model_settings,
    threads: config["threads"]
    localrule: not TINY_MODELS
    resources:
        **heavy_job("model"),
    benchmark:
        benchmark_file("model", "{task}_{role}")
    conda:
        ENV
    script:
        "../scripts/build_model.py"


rule quality_gate:
    """The base teacher and student evaluated on one held-out benchmark and checked against
    task_settings.<task>.gate before any method is trained from them. The gate is read when
    the rule runs (not a param): editing it does not retrain every run."""
    input:
        data=rules.make_data.output.manifest,
        teacher=f"{RESULTS}/models/{{task}}/teacher/model.json",
        student=f"{RESULTS}/models/{{task}}/student/model.json",
    output:
        f"{RESULTS}/models/{{task}}/quality_gate.json",
    log:
        f"{RESULTS}/logs/models/{{task}}_quality_gate.log",
    threads: config["threads"]
    resources:
        **heavy_job("quality_gate"),
    benchmark:
        benchmark_file("quality_gate", "{task}")
    conda:
        ENV
    script:
        "../scripts/quality_gate.py"

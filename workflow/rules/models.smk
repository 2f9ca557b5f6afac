rule tokenizer:
    """Tiny scale: byte-level BPE trained on the task's text. Paper scale: the student's."""
    input:
        train=rules.make_data.output.train,
    output:
        directory(f"{RESULTS}/models/{{task}}/tokenizer"),
    log:
        f"{RESULTS}/logs/models/{{task}}_tokenizer.log",
    params:
        settings=tokenizer_settings,
    conda:
        ENV
    script:
        "../scripts/build_tokenizer.py"


rule model:
    """Tiny scale: a Qwen2 LM trained by SFT on worked solutions (teacher larger and
    longer-trained than student). Paper scale: a pointer to the hub id or local path."""
    input:
        data=rules.make_data.output.manifest,
        tokenizer=rules.tokenizer.output[0],
    output:
        f"{RESULTS}/models/{{task}}/{{role}}/model.json",
    log:
        f"{RESULTS}/logs/models/{{task}}_{{role}}.log",
    params:
        settings=model_settings,
    threads: config["threads"]
    conda:
        ENV
    script:
        "../scripts/build_model.py"


rule quality_gate:
    """The base teacher and student meet the task's expectation (task_settings.<task>.gate)
    on their evaluation of seed 0 before any method is trained from them."""
    input:
        teacher=f"{RESULTS}/eval/{{task}}/base/teacher/seed{SEEDS[0]}/metrics.json",
        student=f"{RESULTS}/eval/{{task}}/base/student/seed{SEEDS[0]}/metrics.json",
    output:
        f"{RESULTS}/models/{{task}}/quality_gate.json",
    log:
        f"{RESULTS}/logs/models/{{task}}_quality_gate.log",
    params:
        gate=lambda wildcards: config["task_settings"][wildcards.task].get("gate") or {},
    conda:
        ENV
    script:
        "../scripts/quality_gate.py"

rule fetch_resource:
    """A paper-scale benchmark file (HumanEval+, MBPP+, LiveCodeBench) into resources/, where
    GitHub or the hub is reachable, at a pinned revision and checked against its pinned sha256
    (opdbench.data.resources); elsewhere the error says where to place it by hand."""
    output:
        "resources/{resource}",
    log:
        "resources/logs/{resource}.log",
    wildcard_constraints:
        resource=r"(HumanEvalPlus|MbppPlus)-v[\d.]+\.jsonl\.gz|livecodebench/test\d*\.jsonl",
    retries: 2
    localrule: True
    conda:
        ENV
    script:
        "../scripts/fetch_resource.py"

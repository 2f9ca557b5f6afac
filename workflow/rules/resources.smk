rule fetch_resource:
    """A paper-scale benchmark file (HumanEval+, MBPP+, LiveCodeBench, the papers' math benchmarks) into resources/, where
    GitHub or the hub is reachable, at a pinned revision and checked against its pinned sha256
    (opdbench.data.resources); elsewhere the error says where to place it by hand."""
    output:
        "resources/{resource}",
    log:
        "resources/logs/{resource}.log",
    wildcard_constraints:
        resource=resource_pattern(),
    retries: 2
    localrule: True
    conda:
        ENV
    script:
        "../scripts/fetch_resource.py"


rule fetch_hub:
    """A hub model or dataset of the experiment into resources/hub/<models|datasets>/<org>/<name>/
    at the config's revision, every file checked against the hashes the hub records at that commit
    (opdbench.data.hub); run where the hub is reachable, e.g. a login node."""
    output:
        "resources/hub/{kind}/{org}/{name}/fetched.json",
    log:
        "resources/logs/hub/{kind}/{org}/{name}.log",
    params:
        revision=hub_revision,
    wildcard_constraints:
        kind="models|datasets",
        org=r"[^/]+",
        name=r"[^/]+",
    retries: 2
    localrule: True
    conda:
        ENV
    script:
        "../scripts/fetch_hub.py"

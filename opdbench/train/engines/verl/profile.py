"""The initial student's difficulty profile for a run on verl (need ``prompt_difficulty``: Uni-OPD's
offline balance), made before verl starts, in a process of its own so that its generation engine
has left the GPUs when verl's start:

    python -m opdbench.train.engines.verl.profile <job.json>

The job names the student, the task (its registered name and settings), the train rows, the method
and the run; the profile is ``common.profile_difficulty``, the local engine's, with the suite's
generation interface drawing the samples (vLLM where installed, as verl's rollouts; transformers
otherwise). It writes ``{prompt index: correct answers}``; ``VerlEngine`` keeps it as the run's fixed
state (``common.fixed_state``) and turns it into the upsampled training parquet.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from opdbench.atomic import atomic_write_text
from opdbench.lazy import torch


VLLM_SEQUENCES_PER_CALL = 8192


def backend() -> str:
    """vLLM where it is installed (a verl GPU node), else transformers' generate."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def run(job: dict[str, Any]) -> dict[int, int]:
    from opdbench.evaluate.generation import SamplingSpec, generate
    from opdbench.models import load_tokenizer
    from opdbench.registry import get_method_class
    from opdbench.tasks import get_task
    from opdbench.tasks.base import read_jsonl
    from opdbench.train import common
    from opdbench.train.engines.verl.launch import methods_dir
    from opdbench.train.rollout import encode_prompts

    train = job["train"]
    task = get_task(job["task"], job["task_cfg"])
    rows = read_jsonl(job["rows"])
    method = get_method_class(job["method"], methods_dir())(job["hparams"], train, job["seed"])
    tokenizer = load_tokenizer(job["student"])
    prompts = encode_prompts(tokenizer, task, rows)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU node; CPU where none (tests)

    def sampler(asked, n, temperature, top_p, max_new_tokens, top_k=0):
        spec = SamplingSpec(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=job["seed"],
                            stop_token_ids=(tokenizer.eos_token_id,), top_k=top_k, dtype=train.get("dtype", "float32"))
        # a prompt's seed from its tokens: the same draws whichever chunk it is in
        out = generate(job["student"], asked, spec, backend=job["backend"], batch_size=len(asked) * n,
                       keys=[",".join(map(str, p)) for p in asked], device=device, tokenizer=tokenizer,
                       desc="difficulty profile")
        return [c.token_ids for per_prompt in out.completions for c in per_prompt]

    decode = lambda responses: tokenizer.batch_decode(responses, skip_special_tokens=True)  # noqa: E731
    # vLLM schedules its own batches: hand it many sequences per call; transformers' generate takes
    # the run's rollout batch
    per_call = VLLM_SEQUENCES_PER_CALL if job["backend"] == "vllm" else train["rollout_batch_size"]
    return common.profile_difficulty(method, task, rows, prompts, job["seed"], sampler, decode, per_call,
                                     train["max_new_tokens"])


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    atomic_write_text(job["out"], json.dumps({str(k): v for k, v in run(job).items()}))


if __name__ == "__main__":
    main(sys.argv[1])

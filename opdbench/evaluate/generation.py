"""Generation: n sampled completions per prompt, behind one call with two backends.

``generate(model, prompts, spec, backend=...)`` takes token-id prompts and a
``SamplingSpec`` and returns, per prompt, ``spec.n`` completions (token ids, text,
finish reason and, on request, the sampled tokens' log-probs), plus the wall seconds and
decoding steps the sampling took. The backends:

- ``hf``: transformers' ``generate`` with a KV cache (``rollout.sample``), on the CPU or
  a GPU. One global seed (``torch.manual_seed(spec.seed)``) before the first batch, so a
  draw depends on the batch it was sampled in; this is the evaluation's code path as it
  was before the interface existed, with the same results.
- ``vllm``: vLLM's offline ``LLM.generate`` (installed separately: CUDA builds only).
  Each prompt is a request with its own seed (``request_seed``) and vLLM gives sample i
  of a request seed + i, so each (prompt, sample) draw is reproducible whatever else is
  in the batch (up to the kernels' batch-dependent rounding of the logits).

Both backends get the decoding parameters unchanged (n, temperature, top-p, max tokens,
the stop ids), no top-k, no repetition penalty, stop only at ``spec.stop_token_ids``, and
the text of every completion is decoded here by the model's tokenizer, so the same tokens
give the same text and the same samples.jsonl row whichever backend drew them. Prompts
are sent ``batch_size // n`` at a time (whole prompts per call) in both, so the decoding
steps of a call (its longest response) mean the same thing for the latency model.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from opdbench.lazy import no_grad, torch
from tqdm import tqdm

from opdbench.atomic import atomic_write_text
from opdbench.config import DEFAULT_BACKEND  # noqa: F401 (re-exported)
from opdbench.errors import ConfigError, unknown_name_error
from opdbench.models import count_parameters, load_model, load_tokenizer, resolve_weights
from opdbench.train.rollout import pack, response_logits, sample, token_logprobs


@dataclass(frozen=True)
class SamplingSpec:
    n: int  # completions per prompt
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop_token_ids: tuple[int, ...]  # a completion ends after the first of these
    logprobs: bool = False  # also return log p(token) of each sampled token (temperature 1)
    top_k: int = 0  # sample among the k likeliest tokens only (0: all; Uni-OPD's difficulty profile: 50)
    dtype: str = "float32"  # the weights' dtype while generating (float32, bfloat16, float16)


@dataclass
class Completion:
    token_ids: list[int]  # including the stop token that ended it
    text: str  # decoded without special tokens
    finish_reason: str  # "stop" (ended on a stop id) or "length" (max_tokens reached)
    logprobs: list[float] | None = None


@dataclass
class Generation:
    completions: list[list[Completion]]  # per prompt, spec.n completions in sample order
    stats: dict[str, Any] = field(default_factory=dict)  # seconds, decode_steps, parameters, ...


def request_seed(seed: int, key: Any) -> int:
    """The seed of one prompt's request: a function of the run's seed and the prompt's key
    only (not of its position), below 2**31 so that seed + i fits any generator."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


class HFBackend:
    """transformers' generate (rollout.sample) on the model loaded in the spec's dtype."""

    name = "hf"
    library = "transformers"

    def __init__(self, model_ref: str | Path, tokenizer, spec: SamplingSpec, device: str = "cpu"):
        if tuple(spec.stop_token_ids) != (tokenizer.eos_token_id,):
            raise ConfigError(f"the hf backend stops only at the tokenizer's eos ({tokenizer.eos_token_id}); "
                              f"stop_token_ids {list(spec.stop_token_ids)} are not supported")
        self.tokenizer = tokenizer
        self.model = load_model(model_ref, dtype=spec.dtype, device=device)
        self.parameters = count_parameters(self.model)
        # One global seed before the first batch: the evaluation's draws as they always were.
        torch.manual_seed(spec.seed)

    def sample(self, prompts: list[list[int]], spec: SamplingSpec, seeds: list[int]) -> list[list[Completion]]:
        responses = sample(self.model, self.tokenizer, prompts, spec.n, spec.temperature, spec.top_p,
                           spec.max_tokens, batch_size=len(prompts) * spec.n, top_k=spec.top_k)
        logprobs = self._score(prompts, responses, spec.n) if spec.logprobs else [None] * len(responses)
        stops = set(spec.stop_token_ids)
        flat = [Completion(ids, "", "stop" if ids and ids[-1] in stops else "length", lp)
                for ids, lp in zip(responses, logprobs)]
        return [flat[i * spec.n:(i + 1) * spec.n] for i in range(len(prompts))]

    @no_grad
    def _score(self, prompts: list[list[int]], responses: list[list[int]], n: int) -> list[list[float]]:
        """log p(token) of each sampled token under the model (temperature 1), by a forward
        pass over prompt + response: the scoring the training losses use."""
        expanded = [p for p in prompts for _ in range(n)]
        seqs = pack(expanded, responses, self.tokenizer.pad_token_id)
        lp = token_logprobs(response_logits(self.model, seqs), seqs.responses)
        return [lp[i, :len(r)].tolist() for i, r in enumerate(responses)]


class VLLMBackend:
    """vLLM's offline engine. The model runs in the spec's dtype, as the hf backend loads it, and
    vLLM is pointed at a generation config that holds only the spec's stop ids, so it stops
    where the hf backend stops (vLLM otherwise adds the eos ids of the model's own
    generation_config.json) and applies none of the model's default sampling settings."""

    name = "vllm"
    library = "vllm"

    def __init__(self, model_ref: str | Path, tokenizer, spec: SamplingSpec, device: str = "cpu"):
        import vllm

        self.vllm = vllm
        weights = resolve_weights(model_ref)
        # vLLM reads the generation config while it starts (its input processor), only then.
        with tempfile.TemporaryDirectory(prefix="opdbench-vllm-") as generation_config:
            atomic_write_text(Path(generation_config) / "generation_config.json",
                              json.dumps({"eos_token_id": list(spec.stop_token_ids)}))
            self.llm = vllm.LLM(model=weights, tokenizer=weights, seed=spec.seed, dtype=spec.dtype,
                                generation_config=generation_config)
        self.parameters = safetensors_parameters(weights)

    def sample(self, prompts: list[list[int]], spec: SamplingSpec, seeds: list[int]) -> list[list[Completion]]:
        vllm = self.vllm
        params = [vllm.SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p,
                                      max_tokens=spec.max_tokens, seed=seed, stop_token_ids=list(spec.stop_token_ids),
                                      logprobs=0 if spec.logprobs else None, detokenize=False,
                                      **({"top_k": spec.top_k} if spec.top_k > 0 else {}))
                  for seed in seeds]
        requests = [vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        completions = []
        for prompt, out in zip(prompts, outputs):
            if list(out.prompt_token_ids) != list(prompt):
                raise RuntimeError("vLLM returned its outputs out of the prompts' order")
            per_prompt = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                if c.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"vLLM request {out.request_id} ended with '{c.finish_reason}'")
                ids = list(c.token_ids)
                # logprobs=0: per position, a dict holding the sampled token's Logprob
                # (vLLM's raw log-probs: the model's distribution at temperature 1).
                lp = [pos[t].logprob for pos, t in zip(c.logprobs, ids)] if spec.logprobs else None
                per_prompt.append(Completion(ids, "", c.finish_reason, lp))
            completions.append(per_prompt)
        return completions


def safetensors_parameters(weights: str | Path) -> int:
    """Parameters stored in a model directory's safetensors files (read from their
    headers), for backends that do not hold the model in this process."""
    total = 0
    for path in sorted(Path(weights).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, entry in header.items():
            if name != "__metadata__":
                total += int(torch.Size(entry["shape"]).numel())
    return total


BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}
INSTALL_HINT = {
    "vllm": "install vLLM in this environment (pip install vllm: CUDA builds only; the version verl pins, "
            "0.24.0, is the tested one) and run on a GPU node; the CPU machines evaluate with "
            "evaluation.backend: hf",
}


def check_backend(name: str, where: str = "evaluation.backend") -> None:
    """ConfigError unless ``name`` is a registered backend whose library imports here."""
    if name not in BACKENDS:
        raise ConfigError(f"config key '{where}': {unknown_name_error('generation backend', name, BACKENDS)}")
    library = BACKENDS[name].library
    if importlib.util.find_spec(library) is None:
        raise ConfigError(f"config key '{where}' is '{name}', but {library} is not importable here: "
                          f"{INSTALL_HINT.get(name, f'install {library}')}")


def backend_version(name: str) -> str:
    return importlib.import_module(BACKENDS[name].library).__version__


def generate(model_ref: str | Path, prompts: Sequence[list[int]], spec: SamplingSpec, *, backend: str = "hf",
             batch_size: int = 64, keys: Sequence[Any] | None = None, device: str = "cpu", tokenizer=None,
             desc: str = "generate") -> Generation:
    """``spec.n`` completions for each prompt. ``keys``: one stable name per prompt (e.g.
    benchmark and problem id) that the vllm backend's per-request seeds derive from
    (default: the prompt's position). ``batch_size``: sequences per call, whole prompts."""
    check_backend(backend)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_ref)
    engine = BACKENDS[backend](model_ref, tokenizer, spec, device=device)
    keys = list(range(len(prompts))) if keys is None else list(keys)
    seeds = [request_seed(spec.seed, key) for key in keys]
    # Whole prompts per call, so every sample of a prompt shares its batch.
    per_call = max(1, batch_size // spec.n)
    completions: list[list[Completion]] = []
    stats = {"seconds": 0.0, "decode_steps": 0, "parameters": engine.parameters}
    for start in tqdm(range(0, len(prompts), per_call), desc=desc, mininterval=5):
        t0 = time.perf_counter()
        chunk = engine.sample([list(p) for p in prompts[start:start + per_call]], spec, seeds[start:start + per_call])
        stats["seconds"] += time.perf_counter() - t0
        flat = [c for per_prompt in chunk for c in per_prompt]
        # Each call decodes until its longest response ends.
        stats["decode_steps"] += max((len(c.token_ids) for c in flat), default=0)
        for c, text in zip(flat, tokenizer.batch_decode([c.token_ids for c in flat], skip_special_tokens=True)):
            c.text = text
        completions += chunk
    stats["seconds_per_decode_step"] = stats["seconds"] / max(1, stats["decode_steps"])
    stats |= {"backend": backend, "backend_version": backend_version(backend)}
    return Generation(completions, stats)

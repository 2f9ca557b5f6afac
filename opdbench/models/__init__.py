"""Tokenizers and causal LMs: built from a config at tiny scale, loaded from the hub or a
local path at paper scale. Both go through ``load_model`` / ``load_tokenizer``.

A model directory holds ``model.json`` (where the weights are: the directory itself for
tiny models, a hub id or local path for paper-scale ones), so the rules depend on one file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from opdbench.lazy import torch

from opdbench.atomic import atomic_dir, atomic_write_text

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's chat format, so that the same prompts serve tiny and hub models.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Qwen2's pre-tokenizer: digits are split one by one, as in the papers' models.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path):
    """Byte-level BPE trained offline on the task corpus, saved as an HF tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    with atomic_dir(out_dir) as tmp:  # the directory is the rule's output: whole or absent
        fast.save_pretrained(tmp)
    return fast


def build_tiny_model(arch: dict[str, Any], tokenizer, seed: int):
    """A Qwen2 causal LM from the ``arch`` config, randomly initialised."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    heads = arch["num_attention_heads"]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=arch.get("num_key_value_heads", heads),
        max_position_embeddings=arch.get("max_position_embeddings", 512),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def write_manifest(model_dir: Path, weights: str | None, **info: Any) -> None:
    """model.json: the rule's output, so written last (after the weights) and atomically: a
    model.json on disk means the directory is complete."""
    atomic_write_text(model_dir / "model.json", json.dumps({"weights": weights, **info}, indent=1))


def _manifest(model_ref: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The model.json a model reference (its directory or the file) names, and its content."""
    ref = Path(model_ref)
    manifest = ref / "model.json" if ref.is_dir() else ref
    if manifest.name != "model.json" or not manifest.exists():
        return None
    return manifest, json.loads(manifest.read_text())


def resolve_weights(model_ref: str | Path) -> str:
    """A model directory with model.json -> where its weights are; anything else as given
    (a hub id or a plain HF directory)."""
    found = _manifest(model_ref)
    if found is None:
        return str(model_ref)
    manifest, info = found
    if info["weights"] is None:  # a teacher per domain: no weights of its own
        raise ValueError(f"{manifest} lists a teacher per domain ({', '.join(info.get('teachers', {}))}): "
                         f"load each one (opdbench.models.teacher_refs)")
    return str(manifest.parent) if info["weights"] == "." else info["weights"]


def teacher_refs(model_ref: str | Path) -> dict[str, str] | None:
    """A mixed task's teacher per domain (its model.json lists ``teachers``: domain -> directory
    beside it, each a model of its own) as domain -> model reference; None for a single model."""
    found = _manifest(model_ref)
    teachers = found[1].get("teachers") if found else None
    return None if teachers is None else {domain: str(found[0].parent / sub) for domain, sub in teachers.items()}


def teachers_by_domain(model_ref: str | Path) -> dict[str | None, str]:
    """``teacher_refs``, with a single model as the teacher of every domain (key None)."""
    return teacher_refs(model_ref) or {None: str(model_ref)}


def check_shared_vocabulary(student_ref: str | Path, teacher_ref: str | Path) -> None:
    """OPD scores the student's sampled tokens under the teacher (every teacher of a mixed task's
    domains): each of the student's tokens must have the same id in the teacher's vocabulary."""
    from opdbench.errors import ConfigError

    student = load_tokenizer(student_ref).get_vocab()
    for domain, ref in teachers_by_domain(teacher_ref).items():
        teacher = load_tokenizer(ref).get_vocab()
        differ = [token for token, i in student.items() if teacher.get(token) != i]
        if differ:
            which = f"the {domain} teacher" if domain else "the teacher"
            raise ConfigError(f"{which} ({ref}) does not share the student's vocabulary: {len(differ)} of the student's "
                              f"{len(student)} tokens have another id or none there (e.g. {differ[:3]}); on-policy "
                              f"distillation scores the student's tokens under the teacher, so both need one tokenizer")


def load_tokenizer(model_ref: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_weights(model_ref))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_ref: str | Path, dtype: str = "float32", device: str = "cpu", trainable: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_weights(model_ref), dtype=getattr(torch, dtype))
    model.to(device)
    model.train(trainable)
    if not trainable:
        model.requires_grad_(False)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())

"""Prompts, sampling and per-token log-probs, shared by SFT, training and evaluation.

Layout of a batch: prompts are left-padded to P tokens, responses right-padded to T
tokens, so every sequence is ``[pad.. prompt | response ..pad]`` and the logits at
positions P-1 .. P+T-2 predict the T response tokens. Position ids follow the attention
mask, exactly as ``generate`` computes them, so scoring sees what sampling saw.
"""
from __future__ import annotations

from dataclasses import dataclass

from opdbench.lazy import no_grad, torch



def encode_prompts(tokenizer, task, problems) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template(task.messages(p), add_generation_prompt=True, tokenize=True, return_dict=False)
        for p in problems
    ]


@dataclass
class Sequences:
    input_ids: torch.Tensor  # [B, P+T]
    attention_mask: torch.Tensor  # [B, P+T]
    position_ids: torch.Tensor  # [B, P+T]
    responses: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] float, 1 on response tokens that carry loss

    @property
    def response_length(self) -> int:
        return self.responses.shape[1]

    def select(self, idx) -> "Sequences":
        return Sequences(*(t[idx] for t in (self.input_ids, self.attention_mask, self.position_ids,
                                            self.responses, self.response_mask)))


def pack(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> Sequences:
    """Left-pad prompts, right-pad responses, concatenate."""
    B = len(prompts)
    P = max(len(p) for p in prompts)
    T = max(1, max(len(r) for r in responses))
    ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + T), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        attn[i, P - len(p):P] = 1
        if r:
            ids[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, P:P + len(r)] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return Sequences(ids, attn, pos, ids[:, P:].clone(), attn[:, P:].float())


def response_logits(model, seqs: Sequences) -> torch.Tensor:
    """Logits [B, T, V] that predict the response tokens (computed only for those)."""
    T = seqs.response_length
    out = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask,
                position_ids=seqs.position_ids, logits_to_keep=T + 1, use_cache=False)
    return out.logits[:, :-1, :].float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) gathered at ``tokens``: [B, T]."""
    if temperature != 1.0:
        logits = logits / temperature
    return torch.gather(torch.nn.functional.log_softmax(logits, dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


@no_grad
def sample(model, tokenizer, prompts: list[list[int]], n: int, temperature: float, top_p: float,
           max_new_tokens: int, batch_size: int = 64, top_k: int = 0) -> list[list[int]]:
    """n responses per prompt (rows ordered prompt-major), each cut after its first eos
    (``generate`` pads only after eos, so a row without eos is all sampled tokens).

    Uses ``generate`` (KV cache). top_k is off by default so that the sampling
    distribution is exactly softmax(logits / temperature) (with top-p when < 1).
    """
    from transformers import GenerationConfig

    gen_cfg = GenerationConfig(
        do_sample=temperature > 0, temperature=max(temperature, 1e-5), top_p=top_p, top_k=top_k,
        max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    expanded = [p for p in prompts for _ in range(n)]
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(expanded), batch_size):
        chunk = expanded[start:start + batch_size]
        seqs = pack(chunk, [[] for _ in chunk], tokenizer.pad_token_id)
        P = seqs.input_ids.shape[1] - 1  # pack reserves one response slot; drop it
        gen = model.generate(input_ids=seqs.input_ids[:, :P], attention_mask=seqs.attention_mask[:, :P],
                             generation_config=gen_cfg)
        for row in gen[:, P:].tolist():
            resp = []
            for tok in row:
                resp.append(tok)
                if tok == eos:
                    break
            out.append(resp)
    model.train(was_training)
    return out

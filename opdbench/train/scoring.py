"""Per-token scoring of response tokens in O(n*k) memory.

A causal LM's logits are ``h @ W^T`` (final hidden state times the output embedding).
At paper scale a response of 4,096 tokens over a 151,936-token vocabulary is 2.5 GB of
float32 logits per model, so nothing here holds the T x V logits: the projection,
softmax and every reduction are done a chunk of positions at a time, and only what a
method needs survives (log-probs at chosen ids, top-k, entropy, ||p||^2).

- ``hidden_at_responses``: final hidden states at the positions that predict the response.
- ``score_tokens`` (no gradient): log-prob of the sampled token, optional top-k ids and
  log-probs, entropy and squared norm of the distribution; used for the teacher, the
  behaviour policy and the reference model.
- ``logprobs_at`` (with gradient): the student's full-vocabulary log-softmax gathered at
  chosen ids (the sampled token and the teacher's top-k), with a backward pass that
  recomputes each chunk's softmax instead of storing it (as verl's fused-linear kernels
  and Liger's fused linear cross-entropy do).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from opdbench.lazy import no_grad, torch

from opdbench.train.rollout import Sequences

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # floats per chunk of logits (64 MB in float32)


def chunk_rows(vocab_size: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    return max(1, chunk_elements // vocab_size)


def output_projection(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = model.get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def hidden_at_responses(model, seqs: Sequences) -> torch.Tensor:
    """Final (normed) hidden states [B, T, H] at the positions whose logits predict the
    T response tokens: positions P-1 .. P+T-2 of ``[prompt | response]``."""
    T = seqs.response_length
    out = model.base_model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask,
                           position_ids=seqs.position_ids, use_cache=False)
    return out.last_hidden_state[:, -T - 1:-1, :]


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    dtype = torch.promote_types(h.dtype, torch.float32)  # at least float32 for the softmax
    logits = (h @ weight.T).to(dtype)
    if bias is not None:
        logits = logits + bias.to(dtype)
    return logits / temperature if temperature != 1.0 else logits


@dataclass
class TokenScores:
    """Detached per-position scores, each [N] or [N, k]."""

    logp: torch.Tensor  # log-prob of the given token
    entropy: torch.Tensor | None = None
    sq_norm: torch.Tensor | None = None  # ||p||_2^2 (REOPOLD's update-energy factor)
    topk_ids: torch.Tensor | None = None
    topk_logp: torch.Tensor | None = None


def gather_scores(parts: list[tuple[torch.Tensor, TokenScores]], total: int) -> TokenScores:
    """One ``TokenScores`` over ``total`` positions from those of row subsets, each given with the
    positions it covers (a teacher per domain scores its own rows)."""
    import dataclasses

    out = {}
    for field in dataclasses.fields(TokenScores):
        values = [(where, getattr(scores, field.name)) for where, scores in parts]
        if values[0][1] is None:
            out[field.name] = None
            continue
        full = values[0][1].new_zeros(total, *values[0][1].shape[1:])
        for where, v in values:
            full[where] = v
        out[field.name] = full
    return TokenScores(**out)


@no_grad
def score_tokens(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor,
                 temperature: float = 1.0, topk: int = 0, entropy: bool = False, sq_norm: bool = False,
                 entropy_temperature: float | None = None, chunk: int | None = None) -> TokenScores:
    """Score ``tokens`` [N] given ``hidden`` [N, H], one chunk of positions at a time.

    ``temperature`` applies to the log-probs and top-k; ``entropy_temperature`` (default:
    the same) to the entropy and ||p||^2, so a teacher can be scored at temperature 1
    while its entropy is taken at the rollout temperature (EOPD).
    """
    N = hidden.shape[0]
    chunk = chunk or chunk_rows(weight.shape[0])
    ent_t = temperature if entropy_temperature is None else entropy_temperature
    out = TokenScores(logp=torch.empty(N, device=hidden.device))
    if entropy:
        out.entropy = torch.empty(N, device=hidden.device)
    if sq_norm:
        out.sq_norm = torch.empty(N, device=hidden.device)
    if topk:
        out.topk_ids = torch.empty(N, topk, dtype=torch.long, device=hidden.device)
        out.topk_logp = torch.empty(N, topk, device=hidden.device)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        logp = torch.log_softmax(_logits(hidden[s:e], weight, bias, temperature), dim=-1)
        out.logp[s:e] = logp.gather(-1, tokens[s:e, None]).squeeze(-1)
        if topk:
            vals, ids = logp.topk(topk, dim=-1)
            out.topk_ids[s:e], out.topk_logp[s:e] = ids, vals
        if entropy or sq_norm:
            if ent_t != temperature:
                logp = torch.log_softmax(_logits(hidden[s:e], weight, bias, ent_t), dim=-1)
            p = logp.exp()
            if entropy:
                out.entropy[s:e] = -(p * logp).sum(-1)
            if sq_norm:
                out.sq_norm[s:e] = (p * p).sum(-1)
        del logp
    return out


def _forward(ctx, hidden, weight, bias, ids, temperature, chunk):
    """LogProbsAt's forward: log-softmax at ``ids``, a chunk of positions at a time."""
    N = hidden.shape[0]
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    out = torch.empty(ids.shape, device=hidden.device, dtype=dtype)
    lse = torch.empty(N, device=hidden.device, dtype=dtype)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        logits = _logits(hidden[s:e], weight, bias, temperature)
        lse[s:e] = torch.logsumexp(logits, dim=-1)
        out[s:e] = logits.gather(-1, ids[s:e]) - lse[s:e, None]
        del logits
    ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), ids, lse)
    ctx.has_bias, ctx.temperature, ctx.chunk = bias is not None, temperature, chunk
    return out


def _backward(ctx, grad_out):
    """LogProbsAt's backward: each chunk's softmax recomputed from the saved log-sum-exp."""
    hidden, weight, bias, ids, lse = ctx.saved_tensors
    bias = bias if ctx.has_bias else None
    t, chunk = ctx.temperature, ctx.chunk
    grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
    dtype = lse.dtype
    grad_w = torch.zeros(weight.shape, device=weight.device, dtype=dtype) if ctx.needs_input_grad[1] else None
    grad_b = (torch.zeros(weight.shape[0], device=weight.device, dtype=dtype)
              if ctx.has_bias and ctx.needs_input_grad[2] else None)
    for s in range(0, hidden.shape[0], chunk):
        e = min(hidden.shape[0], s + chunk)
        g_out = grad_out[s:e].to(dtype)
        p = torch.exp(_logits(hidden[s:e], weight, bias, t) - lse[s:e, None])
        # d log p_i / d z = onehot(i) - p, summed over the gathered ids with their weights
        g = -p * g_out.sum(-1, keepdim=True)
        g.scatter_add_(-1, ids[s:e], g_out)
        g = g / t
        del p
        if grad_h is not None:
            grad_h[s:e] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
        if grad_w is not None:
            grad_w += g.T @ hidden[s:e].to(dtype)
        if grad_b is not None:
            grad_b += g.sum(0)
    grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
    grad_b = grad_b.to(weight.dtype) if grad_b is not None else None
    return grad_h, grad_w, grad_b, None, None, None


@functools.cache
def _logprobs_at_function() -> type:
    """``log_softmax(h W^T / t)[ids]`` for ids [N, m], chunked; backward recomputes the softmax.
    Built at its first use: subclassing torch's Function loads torch (``opdbench.lazy``)."""
    return type("LogProbsAt", (torch.autograd.Function,),
                {"forward": staticmethod(_forward), "backward": staticmethod(_backward)})


def logprobs_at(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor,
                temperature: float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """Full-vocabulary log-softmax of ``hidden @ weight^T / temperature`` at ``ids`` [N, m],
    differentiable in ``hidden``, ``weight`` and ``bias``, in O(N*m + chunk*V) memory."""
    return _logprobs_at_function().apply(hidden, weight, bias, ids, temperature, chunk or chunk_rows(weight.shape[0]))

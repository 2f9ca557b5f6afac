"""Per-token loss terms and their aggregation over the global batch.

A method's ``loss`` returns its loss as terms: per-token values [B, T], the mask of the
tokens they count over, an aggregation mode and a weight. The engine, not the method,
reduces them, over the *global* batch (the mini-batch of one optimizer step), so an engine
that splits that mini-batch into micro-batches or over data-parallel ranks gets the same
loss and gradient as one that does not: each piece's terms are divided by the normalisers
of the whole mini-batch and the pieces' losses are summed (their gradients accumulated).
This is verl's ``agg_loss`` (``verl/trainer/ppo/core_algos.py``) with ``batch_num_tokens``
and ``global_batch_size`` taken per term, since a method's terms count over their own masks:

    token-mean           sum(v * m) / (global token count of m)
    seq-mean-token-mean  sum over sequences of (their token mean) / (global count of sequences with a token)
    seq-mean-token-sum   sum over sequences of (their token sum)  / (global count of sequences with a token)
    token-sum            sum(v * m)

The masks must be detached functions of the scored batch (never of the student's current
output), so an engine can count them before it computes any gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from opdbench.lazy import torch

from opdbench.blocks.policy import AGG_MODES


@dataclass
class LossTerm:
    per_token: torch.Tensor  # [B, T] the term's value at each token (carries the gradient)
    mask: torch.Tensor  # [B, T] the tokens it counts over (0/1, detached)
    agg: str  # one of AGG_MODES
    weight: float = 1.0

    def __post_init__(self):
        if self.agg not in AGG_MODES:
            raise ValueError(f"unknown loss_agg_mode '{self.agg}'; valid: {', '.join(AGG_MODES)}")


@dataclass(frozen=True)
class Normaliser:
    """What a term's aggregation divides by, counted over the global batch."""

    tokens: torch.Tensor  # scalar: tokens where the mask is 1
    seqs: torch.Tensor  # scalar: sequences with at least one such token


def normalisers(pieces: Iterable[Sequence[LossTerm]]) -> list[Normaliser]:
    """The normalisers of each term over the whole batch, given the terms of each of its
    pieces (micro-batches, ranks' shards; one piece: the batch itself). Every piece must
    return the same terms in the same order. On several ranks, all-reduce (sum) the counts."""
    tokens: list[torch.Tensor] | None = None
    seqs: list[torch.Tensor] | None = None
    for terms in pieces:
        masks = [term.mask.to(term.per_token.dtype) for term in terms]
        t = [m.sum() for m in masks]
        s = [(m.sum(-1) > 0).to(m.dtype).sum() for m in masks]
        if tokens is None:
            tokens, seqs = t, s
        else:
            if len(t) != len(tokens):
                raise ValueError(f"the pieces of a batch gave {len(tokens)} and {len(t)} loss terms")
            tokens = [a + b for a, b in zip(tokens, t)]
            seqs = [a + b for a, b in zip(seqs, s)]
    if tokens is None:
        raise ValueError("no loss terms to normalise")
    return [Normaliser(t, s) for t, s in zip(tokens, seqs)]


def aggregate_term(term: LossTerm, norm: Normaliser) -> torch.Tensor:
    """One term of one piece, divided by the global normaliser (see the module doc)."""
    mask = term.mask.to(term.per_token.dtype)
    values = term.per_token * mask
    if term.agg == "token-mean":
        return values.sum() / norm.tokens.clamp(min=1.0)
    if term.agg == "token-sum":
        return values.sum()
    if term.agg == "seq-mean-token-sum":
        return values.sum(-1).sum() / norm.seqs.clamp(min=1.0)
    per_seq = values.sum(-1) / mask.sum(-1).clamp(min=1.0)  # seq-mean-token-mean
    has_tokens = (mask.sum(-1) > 0).to(values.dtype)
    return (per_seq * has_tokens).sum() / norm.seqs.clamp(min=1.0)


def per_token_share(term: LossTerm, norm: Normaliser) -> torch.Tensor:
    """``aggregate_term`` spread over the tokens: a [B, T] matrix whose sum is the piece's share
    (for an engine that sums per-token losses itself, as verl's ``token-sum`` ``agg_loss``)."""
    mask = term.mask.to(term.per_token.dtype)
    values = term.per_token * mask
    if term.agg == "token-mean":
        return values / norm.tokens.clamp(min=1.0)
    if term.agg == "token-sum":
        return values
    if term.agg == "seq-mean-token-sum":
        return values / norm.seqs.clamp(min=1.0)
    return values / mask.sum(-1, keepdim=True).clamp(min=1.0) / norm.seqs.clamp(min=1.0)  # seq-mean-token-mean


def aggregate_terms(terms: Sequence[LossTerm], norms: Sequence[Normaliser]) -> torch.Tensor:
    """The weighted sum of a piece's terms with the global normalisers: the piece's share of
    the batch loss (the shares of all pieces sum to the batch loss)."""
    if len(terms) != len(norms):
        raise ValueError(f"{len(terms)} loss terms but {len(norms)} normalisers")
    total = None
    for term, norm in zip(terms, norms):
        value = term.weight * aggregate_term(term, norm)
        total = value if total is None else total + value
    return total


def batch_loss(terms: Sequence[LossTerm]) -> torch.Tensor:
    """The loss of a batch taken whole (its own normalisers)."""
    return aggregate_terms(terms, normalisers([terms]))

"""O(n*k) scoring equals the naive full-logits computation, values and gradients, and the
credit diagnostics and prompt sampler match hand computations."""
import math

import pytest
import torch

from opdbench.blocks import difficulty_upsample
from opdbench.train.diagnostics import HIST_EDGES, credit_histogram, energy_shares
from opdbench.train.rollout import pack, response_logits, token_logprobs
from opdbench.train.scoring import hidden_at_responses, logprobs_at, output_projection, score_tokens

from conftest import tiny


def test_chunked_logprobs_gradcheck_in_double():
    torch.manual_seed(0)
    h = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    W = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 40, (13, 4))
    assert torch.autograd.gradcheck(lambda h, W, b: logprobs_at(h, W, b, ids, 0.7, chunk=5), (h, W, b))


def test_chunked_logprobs_equal_naive_values_and_gradients():
    torch.manual_seed(1)
    h = torch.randn(50, 16, requires_grad=True)
    W = torch.randn(300, 16, requires_grad=True)
    ids = torch.randint(0, 300, (50, 9))
    weights = torch.randn(50, 9)
    out = logprobs_at(h, W, None, ids, 1.3, chunk=7)
    (out * weights).sum().backward()
    gh, gW = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    ref = torch.log_softmax(h @ W.T / 1.3, -1).gather(-1, ids)
    (ref * weights).sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(gh, h.grad, atol=1e-5) and torch.allclose(gW, W.grad, atol=1e-5)


def test_score_tokens_equal_naive():
    torch.manual_seed(2)
    h, W = torch.randn(30, 8), torch.randn(100, 8)
    tokens = torch.randint(0, 100, (30,))
    s = score_tokens(h, W, None, tokens, temperature=1.0, topk=5, entropy=True, sq_norm=True,
                     entropy_temperature=0.6, chunk=4)
    logp = torch.log_softmax(h @ W.T, -1)
    logp6 = torch.log_softmax(h @ W.T / 0.6, -1)
    assert torch.allclose(s.logp, logp.gather(-1, tokens[:, None]).squeeze(-1), atol=1e-5)
    assert torch.equal(s.topk_ids, logp.topk(5, -1).indices)
    assert torch.allclose(s.topk_logp, logp.topk(5, -1).values, atol=1e-5)
    assert torch.allclose(s.entropy, -(logp6.exp() * logp6).sum(-1), atol=1e-5)
    assert torch.allclose(s.sq_norm, (logp6.exp() ** 2).sum(-1), atol=1e-5)


def test_hidden_state_scoring_matches_the_models_own_logits(tmp_path):
    tok, model = tiny(tmp_path)
    prompts = [tok("Ann has 3 pens.")["input_ids"], tok("How many pens")["input_ids"]]
    seqs = pack(prompts, [[5, 6, 7, 8], [9, 10]], tok.pad_token_id)
    naive = token_logprobs(response_logits(model, seqs), seqs.responses)
    m = seqs.response_mask.bool()
    hidden = hidden_at_responses(model, seqs)
    weight, bias = output_projection(model)
    scored = score_tokens(hidden[m], weight, bias, seqs.responses[m])
    assert torch.allclose(scored.logp, naive[m], atol=1e-5)
    with_grad = logprobs_at(hidden[m], weight, bias, seqs.responses[m][:, None])
    assert torch.allclose(with_grad[:, 0], naive[m], atol=1e-5)


def test_energy_shares_by_hand():
    credit = torch.tensor([-10.0, -1.0, 0.0, 0.5] + [0.1] * 16)
    sq_norm = torch.tensor([0.5, 0.0, 0.3, 0.0] + [0.9] * 16)
    energy = credit ** 2 * (1 - sq_norm)  # 50, 1, 0, 0.25, 16 x 0.001
    shares = energy_shares(credit, sq_norm)
    total = 50 + 1 + 0.25 + 16 * 0.001
    assert shares["energy_share_bottom1"] == pytest.approx(50 / total)  # ceil(0.2) = 1 token
    assert shares["energy_share_bottom5"] == pytest.approx(50 / total)
    assert shares["energy_share_bottom10"] == pytest.approx(51 / total)  # 2 tokens


def test_credit_histogram_bins():
    counts = credit_histogram(torch.tensor([-100.0, -19.9, -0.2, 0.0, 0.3, 4.9, 50.0]))
    assert len(counts) == len(HIST_EDGES) - 1 and sum(counts) == 7
    assert counts[0] == 2 and counts[-1] == 2  # out of range values fall into the end bins
    zero_bin = HIST_EDGES.index(0.0)
    assert counts[zero_bin - 1] == 1 and counts[zero_bin] == 2


def test_difficulty_upsampling_keeps_every_prompt():
    pool = difficulty_upsample({0: 0, 1: 3, 2: 8, 3: 1}, n_samples=8, factor=3)
    assert sorted(pool) == [0, 1, 1, 1, 2, 3, 3, 3]

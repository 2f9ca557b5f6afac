"""Scoring sees what sampling saw: behaviour log-probs recomputed on packed sequences equal
the log-probs of the sampling distribution inside ``generate`` (left padding included)."""
import torch
from transformers import GenerationConfig

from opdbench.train.rollout import pack, response_logits, sample, token_logprobs

from conftest import tiny


def test_pack_layout():
    s = pack([[5, 6], [7]], [[1, 2, 3], [4]], pad_id=0)
    assert s.input_ids.tolist() == [[5, 6, 1, 2, 3], [0, 7, 4, 0, 0]]
    assert s.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert s.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]]


def test_recomputed_logprobs_match_generation(tmp_path):
    tok, model = tiny(tmp_path)
    prompts = [tok("Ann has 3 pens.")["input_ids"], tok("How many pens does Ann have now? 3 + 4")["input_ids"]]
    seqs = pack(prompts, [[], []], tok.pad_token_id)
    P = seqs.input_ids.shape[1] - 1
    torch.manual_seed(0)
    out = model.generate(input_ids=seqs.input_ids[:, :P], attention_mask=seqs.attention_mask[:, :P],
                         generation_config=GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                                            max_new_tokens=12, eos_token_id=tok.eos_token_id,
                                                            pad_token_id=tok.pad_token_id,
                                                            output_scores=True, return_dict_in_generate=True))
    gen_ids = out.sequences[:, P:]
    gen_logp = torch.gather(torch.stack(out.scores, 1).log_softmax(-1), -1, gen_ids.unsqueeze(-1)).squeeze(-1)
    responses = []
    for row in gen_ids.tolist():
        cut = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        responses.append(row[:cut])
    packed = pack(prompts, responses, tok.pad_token_id)
    logp = token_logprobs(response_logits(model, packed), packed.responses)
    mask = packed.response_mask.bool()
    T = packed.responses.shape[1]
    assert torch.allclose(logp[mask], gen_logp[:, :T][mask], atol=1e-4)


def test_sample_is_seeded_and_cut_at_eos(tmp_path):
    tok, model = tiny(tmp_path)
    prompts = [tok("Ann has")["input_ids"]]
    torch.manual_seed(3)
    a = sample(model, tok, prompts, 3, 1.0, 1.0, 10)
    torch.manual_seed(3)
    b = sample(model, tok, prompts, 3, 1.0, 1.0, 10)
    assert a == b and len(a) == 3
    for r in a:
        assert tok.eos_token_id not in r[:-1] and len(r) <= 10


def test_scores_of_a_padded_batch_equal_each_sequence_alone(tmp_path):
    """The engine's scoring path (left-padded prompts, right-padded responses, chunked
    log-softmax) gives each response token exactly the log-prob of an unpadded forward pass."""
    from opdbench.train.scoring import hidden_at_responses, output_projection, score_tokens

    tok, model = tiny(tmp_path)
    prompts = [tok("Ann has 3 pens.")["input_ids"], tok("How many pens does Ann have now? 3 + 4")["input_ids"]]
    responses = [tok(" 3 + 4 = 7.")["input_ids"], tok(" 7")["input_ids"]]
    seqs = pack(prompts, responses, tok.pad_token_id)
    m = seqs.response_mask.bool()
    weight, bias = output_projection(model)
    with torch.no_grad():
        batch = score_tokens(hidden_at_responses(model, seqs)[m], weight, bias, seqs.responses[m], chunk=3).logp
        alone = []
        for p, r in zip(prompts, responses):
            logits = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1]
            alone.append(logits.log_softmax(-1).gather(1, torch.tensor(r)[:, None])[:, 0])
    assert torch.allclose(batch, torch.cat(alone), atol=1e-5)

"""Peak memory of teacher top-k scoring plus the student's differentiable top-k log-probs:
the chunked O(n*k) path of ``opdbench.train.scoring`` against the naive full-logits computation.

Both paths do the same work for one response: the teacher's log-probs at the sampled
tokens and its top-k (ids and log-probs) from its final hidden states; the student's
full-vocabulary log-probs at the sampled token and at the teacher's top-k ids, a top-k
forward KL plus a policy-gradient-style term, and the backward pass into the student's
hidden states and output embedding. The transformer bodies are the same in both paths
and are left out: the inputs are final hidden states.

Each path runs in a fresh process; the figure is its peak memory above what it held
after allocating the inputs (weights and hidden states). On CPU that is the peak RSS
(getrusage) minus the RSS before scoring; on CUDA, torch's max_memory_allocated.

    python benchmarks/topk_scoring_memory.py                       # 4,096 tokens, vocab 151,936
    python benchmarks/topk_scoring_memory.py --device cuda --hidden 1536
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_path(args) -> dict:
    import torch

    from opdbench.blocks import topk_forward_kl
    from opdbench.train.scoring import logprobs_at, score_tokens

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    T, V, H, k = args.tokens, args.vocab, args.hidden, args.k
    t_hidden = torch.randn(T, H, device=dev) * 0.05
    t_weight = torch.randn(V, H, device=dev) * 0.05
    s_hidden = (torch.randn(T, H, device=dev) * 0.05).requires_grad_(True)
    s_weight = (torch.randn(V, H, device=dev) * 0.05).requires_grad_(True)
    tokens = torch.randint(0, V, (T,), device=dev)
    credit_scale = torch.randn(T, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_bytes()
    t0 = time.time()
    if args.path == "naive":
        t_logp = torch.log_softmax(t_hidden @ t_weight.T, dim=-1)  # [T, V] teacher
        logT = t_logp.gather(-1, tokens[:, None]).squeeze(-1)
        topk_logT, topk_ids = t_logp.topk(k, dim=-1)
        s_logp = torch.log_softmax(s_hidden @ s_weight.T, dim=-1)  # [T, V] student, with graph
        logS = s_logp.gather(-1, tokens[:, None]).squeeze(-1)
        topk_logS = s_logp.gather(-1, topk_ids)
    else:
        scores = score_tokens(t_hidden, t_weight, None, tokens, topk=k)
        logT, topk_ids, topk_logT = scores.logp, scores.topk_ids, scores.topk_logp
        ids = torch.cat([tokens[:, None], topk_ids], dim=-1)
        logp = logprobs_at(s_hidden, s_weight, None, ids)
        logS, topk_logS = logp[:, 0], logp[:, 1:]
    loss = (topk_forward_kl(topk_logT, topk_logS, renormalize=False).mean()
            - ((logT - logS).detach() * credit_scale * logS).mean())
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"path": args.path, "peak_bytes": peak, "seconds": time.time() - t0, "loss": loss.item(),
            "grad_norm": s_weight.grad.norm().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=896, help="hidden size (896: Qwen2.5-0.5B; 1536: 1.5B)")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--path", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.path:
        print(json.dumps(run_path(args)))
        return
    results = {}
    for path in ("naive", "chunked"):
        cmd = [sys.executable, __file__, "--path", path] + [f"--{a}={getattr(args, a)}" for a in
                                                             ("tokens", "vocab", "hidden", "k", "device", "threads")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[path] = json.loads(out.strip().splitlines()[-1])
    gib = 2**30
    print(f"top-k scoring memory: {args.tokens} response tokens, vocabulary {args.vocab}, hidden {args.hidden}, "
          f"k {args.k}, {args.device}")
    naive_logits = args.tokens * args.vocab * 4 / gib
    print(f"  (one T x V float32 logits tensor: {naive_logits:.2f} GiB)")
    for path, r in results.items():
        print(f"  {path:8s} peak above inputs {r['peak_bytes'] / gib:7.3f} GiB   {r['seconds']:6.1f} s   "
              f"loss {r['loss']:.6f}   grad norm {r['grad_norm']:.6f}")
    ratio = results["chunked"]["peak_bytes"] / results["naive"]["peak_bytes"]
    print(f"  chunked / naive = {ratio:.4f}  (target <= 0.25)")


if __name__ == "__main__":
    main()

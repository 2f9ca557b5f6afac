"""How often does each model answer before it has finished the work? For the tiny math
task: the share of a benchmark's samples whose response has fewer lines of work
(``a op b = c.``) than the gold solution, and the accuracy of the rest. The tiny student
learns from an under-thinking writer (``task_settings.math.student.sft.writer``); this
shows whether distillation removed that habit, and what the completed answers are worth.

    python benchmarks/stopped_early.py                 # results/tiny, benchmark math_id
    python benchmarks/stopped_early.py --experiment probe_d20 --benchmark math_long
    python benchmarks/stopped_early.py --credit     # also the teacher's credit on the early answers

``--credit``: for the base student's early answers (evaluation seed 0), the per-token credit
``logT - logS`` of the first token of the premature ``The answer is`` (the response
re-encoded by the tokenizer).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdbench.tasks.base import read_jsonl  # noqa: E402
from opdbench.tasks.math import WORK_LINE  # noqa: E402


def early_answer_credit(root: Path, gold_rows: dict[int, dict], samples: list[dict], limit: int = 200) -> list[float]:
    import torch

    from opdbench import pipeline
    from opdbench.config import load_yaml
    from opdbench.models import load_model, load_tokenizer
    from opdbench.train.rollout import encode_prompts, pack, response_logits, token_logprobs

    task = pipeline.load_task(load_yaml(REPO / "config" / "config.yaml"), "math")
    models = root / "models" / "math"
    student, teacher, tok = load_model(models / "student"), load_model(models / "teacher"), load_tokenizer(models / "student")
    early = samples[:limit]
    seqs = pack(encode_prompts(tok, task, [gold_rows[s["id"]] for s in early]),
                [tok(s["response"], add_special_tokens=False)["input_ids"] for s in early], tok.pad_token_id)
    with torch.no_grad():
        credit = (token_logprobs(response_logits(teacher, seqs), seqs.responses)
                  - token_logprobs(response_logits(student, seqs), seqs.responses))
    at = [len(tok(s["response"][:s["response"].index(" The answer")], add_special_tokens=False)["input_ids"])
          for s in early]
    return [credit[i, n].item() for i, n in enumerate(at)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny")
    p.add_argument("--benchmark", default="math_id")
    p.add_argument("--results", type=Path, default=REPO / "results")
    p.add_argument("--credit", action="store_true", help="also score the base student's early answers")
    args = p.parse_args()
    root = args.results / args.experiment
    gold_rows = {r["id"]: r for r in read_jsonl(root / "data" / "math" / "eval.jsonl") if r["benchmark"] == args.benchmark}
    gold = {i: len(WORK_LINE.findall(r["solution"])) for i, r in gold_rows.items()}
    files = sorted((root / "eval" / "math").glob("**/samples.jsonl"))
    if not files:
        sys.exit(f"no samples under {root / 'eval' / 'math'}: run the workflow first")
    rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # model -> per seed
    for f in files:
        samples = [s for s in read_jsonl(f) if s["benchmark"] == args.benchmark]
        early = [len(WORK_LINE.findall(s["response"])) < gold[s["id"]] for s in samples]
        done = [s["correct"] for s, e in zip(samples, early) if not e]
        model = str(f.parent.parent.relative_to(root / "eval" / "math"))
        rows[model].append((100 * sum(early) / len(samples), 100 * sum(done) / max(len(done), 1),
                            100 * sum(s["correct"] for s in samples) / len(samples)))
    print(f"{args.experiment} / {args.benchmark}: % of samples that stop before the gold solution's last line "
          "of work; accuracy of the samples that do not, and of all (mean over seeds)")
    print(f"{'model':<24} {'seeds':>5} {'stopped early':>14} {'acc. finished':>14} {'acc. all':>9}")
    for model, per_seed in sorted(rows.items()):
        means = [sum(v[i] for v in per_seed) / len(per_seed) for i in range(3)]
        print(f"{model:<24} {len(per_seed):>5} {means[0]:>14.1f} {means[1]:>14.1f} {means[2]:>9.1f}")
    if args.credit:
        samples = [s for s in read_jsonl(root / "eval" / "math" / "base" / "student" / "seed0" / "samples.jsonl")
                   if s["benchmark"] == args.benchmark and " The answer" in s["response"]
                   and len(WORK_LINE.findall(s["response"])) < gold[s["id"]]]
        credit = sorted(early_answer_credit(root, gold_rows, samples))
        print(f"credit logT - logS on the first token of the base student's early answers ({len(credit)}, seed 0): "
              f"median {credit[len(credit) // 2]:.1f}, mean {sum(credit) / len(credit):.1f} nats")


if __name__ == "__main__":
    main()

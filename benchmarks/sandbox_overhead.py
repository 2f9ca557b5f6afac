"""What one sandboxed code check costs, by who forks the sandbox's child.

fork() copies the forking process's page tables, so a check forked straight from a
process that holds torch and a few hundred MB of tensors (a training or evaluation job)
costs more than one forked from a bare interpreter. ``code_exec`` therefore forks from
a zygote (a bare interpreter per checking thread). This prints milliseconds per check of a
correct 8-test solution for the four combinations, each in a fresh interpreter:

    python benchmarks/sandbox_overhead.py [--checks 100] [--parent-mb 600]
"""
from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, time
checks, parent_mb, zygote = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
if parent_mb:
    import torch
    held = torch.ones(parent_mb * 262144)  # parent_mb MB of float32, touched
from opdbench.tasks import code_exec
code_exec.USE_ZYGOTE = zygote
problem = {"entry_point": "f", "tests": {"kind": "function", "inputs": [[[1, 2, 3]]] * 8, "expected": [6] * 8}}
code = "def f(xs):\\n    return sum(xs)"
assert code_exec.check_problem(code, problem).passed  # starts the zygote
start = time.perf_counter()
results = [code_exec.check_problem(code, problem) for _ in range(checks)]
assert all(r.passed for r in results)
print(f"{(time.perf_counter() - start) / checks * 1000:.1f}")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", type=int, default=100)
    p.add_argument("--parent-mb", type=int, default=600, help="tensor memory the 'training' parent holds")
    args = p.parse_args()
    print(f"{'parent':<28} {'forked by':<10} {'ms per check':>12}")
    for parent_mb in (0, args.parent_mb):
        for zygote in (False, True):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.checks), str(parent_mb), str(int(zygote))],
                                 capture_output=True, text=True, check=True).stdout.strip()
            parent = f"torch + {parent_mb} MB tensors" if parent_mb else "bare interpreter"
            print(f"{parent:<28} {'zygote' if zygote else 'parent':<10} {out:>12}")


if __name__ == "__main__":
    main()

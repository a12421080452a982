"""Benchmark: OSSCAR on one layer — quality against brute force, and time at 1B-class shape.

    .venv/bin/python benchmarks/osscar_layer.py [--problems 200] [--hidden 2048 --intermediate 8192 --tokens 4096 --fraction 0.5] [--json out.json]

Part 1 (quality): random problems of 5-12 groups (a quarter of them with groups of 2
columns, like KV groups), correlated inputs X = Z·M, random keep. For each, the exact
optimum of the objective by enumerating every subset, then the share of problems where
(a) backward greedy alone, (b) the better of backward and forward greedy, (c) OSSCAR
(greedy + local search, refit) land within 1% of it. The baseline is greedy measured in
the same run.

Part 1b (ridge, ``--ridges``): OSSCAR at each relative ridge (the damping of the Gram it
optimizes), scored on the *true* objective, the undamped reconstruction error with a
least-squares refit, against the true optimum by enumeration; half the problems have
nearly collinear inputs (rank 5 plus noise 1e-3), where damping changes the choice. The
baseline is ridge 0 measured in the same run. This is how ``prune.ridge``'s default is chosen.

Part 2 (speed): one MLP ``down_proj`` of 1B-class shape (hidden 2048, intermediate 8192)
with 4096 calibration tokens of a real SwiGLU activation (silu(Z Wgᵀ) ⊙ (Z Wuᵀ), random
weights) and 50% of the neurons removed. Reports seconds of greedy elimination and of
local search (100 swaps at most), their ratio (target: local search ≤ 3× greedy), the
swaps made and the relative reconstruction error after each, on this CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from recslm.prune.objective import Groups, damp, keep_count, reconstruction_error, refit
from recslm.prune.osscar import _forward_greedy, _greedy, osscar


def quality(problems: int) -> dict[str, float]:
    hits = {"backward greedy": 0, "best greedy": 0, "osscar": 0}
    gaps: list[float] = []
    for seed in range(problems):
        g = torch.Generator().manual_seed(seed)
        count = int(torch.randint(5, 13, (1,), generator=g))
        size = 2 if seed % 4 == 0 else 1
        keep = int(torch.randint(1, count, (1,), generator=g))
        groups = Groups(count, size)
        x = torch.randn(64, groups.width, generator=g, dtype=torch.float64) @ torch.randn(groups.width, groups.width, generator=g, dtype=torch.float64)
        w = torch.randn(6, groups.width, generator=g, dtype=torch.float64)
        h = damp(x.T @ x, 1e-2)

        def f(kept) -> float:
            cols = groups.columns(sorted(kept))
            return reconstruction_error(w, h, cols, refit(w, h, cols))

        optimum = min(f(s) for s in itertools.combinations(range(count), keep))
        backward = f(_greedy(w, h, groups, keep, 1)[0])
        best_greedy = min(backward, f(_forward_greedy(w, h, groups, keep)))
        result = osscar(w, x.T @ x, groups, keep).error
        for name, value in (("backward greedy", backward), ("best greedy", best_greedy), ("osscar", result)):
            hits[name] += value <= optimum * 1.01 + 1e-12
        gaps.append(result / optimum - 1 if optimum > 0 else 0.0)
    out = {name: n / problems for name, n in hits.items()}
    out["osscar worst gap"] = max(gaps)
    return out


def _true_error(w: torch.Tensor, h0: torch.Tensor, groups: Groups, kept) -> float:
    """Undamped reconstruction error with the least-squares refit (pinv: H_SS may be singular)."""
    cols = groups.columns(sorted(kept))
    fitted = (torch.linalg.pinv(h0[cols][:, cols], hermitian=True) @ (w @ h0[:, cols]).T).T
    return reconstruction_error(w, h0, cols, fitted)


def ridge_quality(problems: int, ridges: list[float]) -> dict[str, dict[str, float]]:
    from recslm.prune.osscar import SingularGramError

    hits = {r: 0 for r in ridges}
    gaps: dict[float, list[float]] = {r: [] for r in ridges}
    singular = {r: 0 for r in ridges}
    for seed in range(problems):
        g = torch.Generator().manual_seed(10_000 + seed)
        count = int(torch.randint(5, 13, (1,), generator=g))
        keep = int(torch.randint(1, count, (1,), generator=g))
        groups = Groups(count, 1)
        if seed % 2:
            z = torch.randn(64, 5, generator=g, dtype=torch.float64)
            x = z @ torch.randn(5, count, generator=g, dtype=torch.float64) + 1e-3 * torch.randn(64, count, generator=g, dtype=torch.float64)
        else:
            x = torch.randn(64, count, generator=g, dtype=torch.float64) @ torch.randn(count, count, generator=g, dtype=torch.float64)
        w = torch.randn(6, count, generator=g, dtype=torch.float64)
        h0 = x.T @ x
        optimum = min(_true_error(w, h0, groups, s) for s in itertools.combinations(range(count), keep))
        for ridge in ridges:
            try:
                kept = osscar(w, h0, groups, keep, ridge=ridge).keep_groups.tolist()
            except SingularGramError:
                singular[ridge] += 1
                continue
            value = _true_error(w, h0, groups, kept)
            hits[ridge] += value <= optimum * 1.01 + 1e-9 * float(torch.einsum("oi,ij,oj->", w, h0, w))
            gaps[ridge].append(value / optimum - 1 if optimum > 0 else 0.0)
    return {
        str(r): {"within_1pct": hits[r] / problems, "mean_gap": sum(gaps[r]) / max(1, len(gaps[r])), "singular": singular[r] / problems}
        for r in ridges
    }


def speed(hidden: int, intermediate: int, tokens: int, fraction: float, iters: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(tokens, hidden, generator=g)
    w_gate = torch.randn(intermediate, hidden, generator=g) / hidden**0.5
    w_up = torch.randn(intermediate, hidden, generator=g) / hidden**0.5
    x = torch.nn.functional.silu(z @ w_gate.T) * (z @ w_up.T)
    w_down = torch.randn(hidden, intermediate, generator=g, dtype=torch.float64) / intermediate**0.5
    gram = (x.T @ x).double()  # float32 product: building the benchmark input, not timed
    del z, w_gate, w_up, x
    keep = keep_count(intermediate, fraction)
    result = osscar(w_down, gram, Groups(intermediate, 1), keep, local_search_iters=iters)
    return {
        "greedy_s": result.seconds_greedy,
        "local_search_s": result.seconds_local,
        "ratio": result.seconds_local / result.seconds_greedy,
        "swaps": result.swaps,
        "rel_error_greedy": result.error_greedy / result.total,
        "rel_error_local": result.error_local / result.total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=200, help="random small problems (0: skip part 1)")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=8192, help="0: skip part 2")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--iters", type=int, default=100, help="local-search swaps at most")
    parser.add_argument("--ridges", type=str, default="", help="comma-separated relative ridges for part 1b, e.g. 0,1e-4,1e-3,1e-2,1e-1")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    report: dict[str, dict[str, float]] = {}
    if args.problems:
        report["quality"] = q = quality(args.problems)
        print(f"{args.problems} random problems (5-12 groups), share within 1% of the brute-force optimum:")
        print(f"  backward greedy {q['backward greedy']:.1%}, better of backward/forward greedy {q['best greedy']:.1%}, "
              f"OSSCAR {q['osscar']:.1%} (worst OSSCAR gap {q['osscar worst gap']:.2%}); "
              f"OSSCAR / backward greedy = {q['osscar'] / q['backward greedy']:.2f}x")
    if args.ridges and args.problems:
        ridges = [float(r) for r in args.ridges.split(",")]
        report["ridge"] = rq = ridge_quality(args.problems, ridges)
        print(f"{args.problems} problems (half nearly collinear), on the true (undamped) objective, share within 1% of its optimum:")
        base = rq[str(ridges[0])]["within_1pct"]
        for r in ridges:
            row = rq[str(r)]
            ratio = f"{row['within_1pct'] / base:.2f}x ridge {ridges[0]:g}" if base else "n/a"
            print(f"  ridge {r:g}: {row['within_1pct']:.1%} (mean gap {row['mean_gap']:.2%}, singular {row['singular']:.1%}); {ratio}")
    if args.intermediate:
        report["speed"] = s = speed(args.hidden, args.intermediate, args.tokens, args.fraction, args.iters)
        print(f"one down_proj {args.hidden}x{args.intermediate}, {args.tokens} tokens, {args.fraction:.0%} of neurons removed, "
              f"{torch.get_num_threads()} threads:")
        print(f"  greedy {s['greedy_s']:.1f} s (relative error {s['rel_error_greedy']:.4f}); local search {s['local_search_s']:.1f} s, "
              f"{s['swaps']} swaps (relative error {s['rel_error_local']:.4f}); local search / greedy = {s['ratio']:.2f}x (target <= 3)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; machine: {platform.machine()} {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; load average at start {load:.1f}; date {time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

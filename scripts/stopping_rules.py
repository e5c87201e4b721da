"""How honest the tests after a sweep stay under each way of choosing the number of seeds (docs/sweeps.md).

Simulated seeds (normal, sd 1) of two configurations with the same mean, sized by:
- ``until``: ``bench sweep --until``'s own schedule (:func:`bench.app.sweep.precision.stage`) at half-width H (in
  units of the seed-to-seed sd), each configuration on its own;
- ``significance``: 3 seeds a side, then one more a side until Welch's p < 0.05 or ``--max-seeds``;
- ``fixed``: a fixed count a side.

For each: the mean seeds a configuration got, how often Welch's test over seeds calls the (null) difference
significant at 0.05, how often a configuration's 95% interval of its mean covers the true mean, and how often TOST
at ±(margin) calls the two "equivalent" when their true difference sits exactly on the margin (each should be 0.05
or, for coverage, 0.95).

    python scripts/stopping_rules.py --reps 4000 --out results/stopping_rules.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app.sweep.precision import Until, stage  # noqa: E402
from bench.results.stats import mean_halfwidth, tost_welch, welch  # noqa: E402


def adaptive(draw, until: Until) -> list[float]:
    values = {}
    while True:
        st = stage(values, until)
        if not st.todo:
            return [values[s] for s in range(st.n)]
        for seed in st.todo:
            values[seed] = draw()


def significance(rng, shift: float, max_seeds: int) -> tuple[list, list]:
    a, b = list(rng.normal(0, 1, 3)), list(rng.normal(shift, 1, 3))
    while len(a) < max_seeds and not welch(a, b).p_value < 0.05:
        a.append(rng.normal(0, 1))
        b.append(rng.normal(shift, 1))
    return a, b


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=4000, help="Simulated comparisons per rule.")
    parser.add_argument("--halfwidths", default="1,0.5", help="--until half-widths, in seed-to-seed sds.")
    parser.add_argument("--min-seeds", default="3,5")
    parser.add_argument("--max-seeds", type=int, default=20)
    parser.add_argument("--margin", type=float, default=1.0, help="TOST margin, in seed-to-seed sds.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="Also write the table here (CSV).")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    def measure(rule: str, pairs) -> dict:
        ns, significant, covered, equivalent = [], 0, 0, 0
        for null_pair, margin_pair in pairs:
            a, b = null_pair
            ns.append(len(a))
            significant += welch(a, b).p_value < 0.05
            covered += abs(np.mean(a)) <= mean_halfwidth(a)
            a, b = margin_pair  # true difference exactly on the margin: "equivalent" is a false claim
            equivalent += tost_welch(a, b, args.margin).p_value < 0.05
        return {"rule": rule, "mean_seeds": round(float(np.mean(ns)), 1),
                "welch_false_positive": significant / args.reps, "ci_coverage": covered / args.reps,
                "tost_false_equivalent": equivalent / args.reps}

    rows = []
    for h in [float(v) for v in args.halfwidths.split(",")]:
        for low in [int(v) for v in args.min_seeds.split(",")]:
            until = Until("m", h, low, args.max_seeds)

            def pair(shift):
                return adaptive(lambda: rng.normal(0, 1), until), adaptive(lambda: rng.normal(shift, 1), until)

            rows.append(measure(f"until ±{h:g} sd, min {low}", ((pair(0), pair(args.margin))
                                                               for _ in range(args.reps))))
    rows.append(measure(f"significance, 3 to {args.max_seeds}", ((significance(rng, 0, args.max_seeds),
                                                                 significance(rng, args.margin, args.max_seeds))
                                                                for _ in range(args.reps))))
    for n in (3, 10):
        rows.append(measure(f"fixed {n}", (((list(rng.normal(0, 1, n)), list(rng.normal(0, 1, n))),
                                            (list(rng.normal(0, 1, n)), list(rng.normal(args.margin, 1, n))))
                                           for _ in range(args.reps))))
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return table


if __name__ == "__main__":
    main()

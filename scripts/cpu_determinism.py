"""Which gathers of the training step are deterministic on a CPU, and what the deterministic one costs.

For each row gather the step differentiates (at the shapes the reference model and batch sizes give),
this runs forward + backward ``--repeats`` times at the current thread count and counts the distinct
gradients it gets, for plain indexing (``table[index]``, whose backward is an ``index_put_`` with
``accumulate=True``) and for :func:`bench.deterministic.take_rows`; then it times both, interleaved.
``--step`` also times the whole reference training step (prompt tree, batch 32) with each gather.
``--find-ops`` is how the gathers were found: it runs identical training steps several times and lists
every aten op whose outputs differed although its inputs were the same.

    python scripts/cpu_determinism.py --step --out results/cpu_determinism/gathers.csv   # torch's default threads
    python scripts/cpu_determinism.py --find-ops modified_resnet:32:tree timm/resnet18:128:unique --gather index
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import deterministic  # noqa: E402
from bench.clip import model as model_module  # noqa: E402
from bench.engine import prompt_tree  # noqa: E402
from bench.clip.prompts import prompt_table  # noqa: E402
from bench.engine import train_step as trainer  # noqa: E402
from bench.engine.build import build_engine  # noqa: E402
from bench.engine.recipe import TrainRecipe  # noqa: E402

# (site, table shape, index length): the gathers of one step of the reference model (text width 512)
SITES = [
    ("prompt tree: positional embedding, seed templates", (77, 512), 74),
    ("prompt tree: end-of-text rows, batch 32", (122, 512), 32),
    ("prompt tree: end-of-text rows, batch 64", (93, 512), 64),
    ("unique prompts: caption rows, batch 128", (48, 512), 128),
    ("whole table: caption rows, batch 1024", (50, 512), 1024),
]


def plain_rows(table, index):
    return table[index]


GATHERS = {"index (before)": plain_rows, "take_rows (after)": deterministic.take_rows}


def distinct_gradients(gather, shape, n, repeats: int) -> int:
    torch.manual_seed(0)
    table = torch.randn(*shape, requires_grad=True)
    index = torch.randint(0, shape[0], (n,))
    grad = torch.randn(n, shape[1])
    seen = set()
    for _ in range(repeats):
        table.grad = None
        gather(table, index).backward(grad)
        seen.add(table.grad.numpy().tobytes())
    return len(seen)


def time_gather(gather, shape, n, rounds: int, reps: int) -> float:
    table = torch.randn(*shape, requires_grad=True)
    index = torch.randint(0, shape[0], (n,))
    grad = torch.randn(n, shape[1])
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            table.grad = None
            gather(table, index).backward(grad)
        samples.append((time.perf_counter() - start) / reps)
    return statistics.median(samples)


@contextlib.contextmanager
def gather_in_step(gather):
    """Every gather site of the step uses ``gather`` within the block."""
    modules = (model_module, prompt_tree, trainer)
    saved = [m.take_rows for m in modules]
    for m in modules:
        m.take_rows = gather
    try:
        yield
    finally:
        for m, g in zip(modules, saved):
            m.take_rows = g


def time_step(rounds: int, steps: int) -> dict:
    from bench.host.manager import get_entry

    templates = get_entry("templates", "seed").create()
    classes = [f"class{i}" for i in range(10)]
    tokens = prompt_table(templates, classes)
    torch.manual_seed(0)
    clip = model_module.create_model("modified_resnet")
    state = build_engine(clip, tokens, TrainRecipe(text_mode="tree")).state
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    prompt_ids = labels * len(templates) + torch.randint(0, len(templates), (32,))
    samples = {name: [] for name in GATHERS}
    names = list(GATHERS)
    for r in range(rounds):  # interleaved, in alternating order, so drift in the machine's load hits both alike
        for name in names if r % 2 == 0 else names[::-1]:
            gather = GATHERS[name]
            with gather_in_step(gather):
                trainer.device_step(state, images, labels, prompt_ids)  # warm
                start = time.perf_counter()
                for _ in range(steps):
                    trainer.device_step(state, images, labels, prompt_ids)
                samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(s) for name, s in samples.items()}


def find_nondeterministic_ops(encoder: str, batch: int, text_mode: str, runs: int, steps: int) -> list[dict]:
    """Run the same training steps ``runs`` times from the same weights, logging every aten op's inputs and outputs
    (a hash of their bytes); report each op whose outputs differed between runs although its inputs did not."""
    import copy
    import hashlib

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from bench.host.manager import get_entry

    def digest(t):
        return hashlib.sha1(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.log = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
            self.log.append((str(func), tuple(digest(a) for a in tensors),
                             tuple(digest(o) for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)),
                             [tuple(a.shape) for a in tensors]))
            return out

    templates = get_entry("templates", "seed").create()
    classes = [f"class{i}" for i in range(10)]
    tokens = prompt_table(templates, classes)
    torch.manual_seed(0)
    base = model_module.create_model(encoder)
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    prompt_ids = labels * len(templates) + torch.randint(0, len(templates), (batch,))

    def run_once(record: bool):
        clip = copy.deepcopy(base)
        state = build_engine(clip, tokens, TrainRecipe(text_mode=text_mode)).state
        recorder = Recorder()
        with recorder if record else contextlib.nullcontext():
            for _ in range(steps):
                trainer.device_step(state, images, labels, prompt_ids)
        return recorder.log

    run_once(False)  # builds and caches the prompt tree, so every recorded run issues the same ops
    logs = [run_once(True) for _ in range(runs)]
    found = {}
    for entries in zip(*logs):
        if len({e[1] for e in entries}) == 1 and len({e[2] for e in entries}) > 1:
            found.setdefault((entries[0][0], str(entries[0][3])), 0)
            found[(entries[0][0], str(entries[0][3]))] += 1
    return [{"encoder": encoder, "batch": batch, "text_mode": text_mode, "runs": runs, "steps": steps, "op": op,
             "input_shapes": shapes, "times_differed": n} for (op, shapes), n in found.items()] or [
        {"encoder": encoder, "batch": batch, "text_mode": text_mode, "runs": runs, "steps": steps, "op": "(none)",
         "input_shapes": "", "times_differed": 0}]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="backward passes per gather for the distinct count")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=200, help="timed gathers per round")
    parser.add_argument("--step", action="store_true", help="also time the reference training step")
    parser.add_argument("--step-rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--out", type=Path, help="write the table as CSV here")
    parser.add_argument("--find-ops", metavar="ENCODER:BATCH:MODE", nargs="+",
                        help="instead: find the ops of the step whose outputs differ between identical runs, e.g. "
                             "modified_resnet:32:tree timm/resnet18:128:unique")
    parser.add_argument("--runs", type=int, default=5, help="identical runs per --find-ops configuration")
    parser.add_argument("--gather", choices=["take_rows", "index"], default="take_rows",
                        help="the gather --find-ops runs the step with (index: as before the fix)")
    args = parser.parse_args(argv)
    import pandas as pd

    if args.find_ops:
        found = []
        gather = deterministic.take_rows if args.gather == "take_rows" else plain_rows
        with gather_in_step(gather):
            for spec in args.find_ops:
                encoder, batch, mode = spec.rsplit(":", 2)
                found += find_nondeterministic_ops(encoder, int(batch), mode, args.runs, 2)
        table = pd.DataFrame(found).assign(gather=args.gather, threads=torch.get_num_threads())
        print(table.to_markdown(index=False))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.out, index=False)
        return table

    threads = torch.get_num_threads()
    rows = []
    for site, shape, n in SITES:
        for name, gather in GATHERS.items():
            rows.append({"site": site, "table": "x".join(map(str, shape)), "rows": n, "gather": name,
                         "threads": threads, "repeats": args.repeats,
                         "distinct_gradients": distinct_gradients(gather, shape, n, args.repeats),
                         "microseconds": round(1e6 * time_gather(gather, shape, n, args.rounds, args.reps), 2)})
    if args.step:
        for name, seconds in time_step(args.step_rounds, args.steps).items():
            rows.append({"site": "reference training step, batch 32, prompt tree", "table": "", "rows": 32,
                         "gather": name, "threads": threads, "repeats": "", "distinct_gradients": "",
                         "microseconds": round(1e6 * seconds, 1)})
    table = pd.DataFrame(rows)
    before = table[table["gather"] == "index (before)"].set_index("site")["microseconds"]
    after = table[table["gather"] == "take_rows (after)"].set_index("site")["microseconds"]
    table["after_over_before"] = table["site"].map((after / before).round(3))
    print(table.to_markdown(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return table


if __name__ == "__main__":
    main()

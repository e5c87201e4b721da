"""``bench run`` from its parsed options: one run, one run per seed (then their mean ± std), or a stopped run
continued (``--resume``)."""
from __future__ import annotations

from dataclasses import replace

from .summary import run_line, summary_lines


def run_command(flags: dict, seeds=(), resume: str | None = None, given=(), echo=print,
                own_process: bool = False) -> list[dict]:
    """Run what ``flags`` (``bench run``'s options by parameter name) describe and print a line per run.

    ``given``: the parameter names typed on the command line; with ``resume`` only those that cannot change
    the run's numbers may be among them (:data:`bench.app.resume.ALLOWED_WITH_RESUME`). ``own_process``: this
    process is the command (:mod:`bench.app.own_process`).
    """
    from .own_process import import_the_engine, imports_without_gc

    cfgs = []
    if resume is None:  # bad options, unknown names among them, are refused before the heavy imports
        from .options import config_from_flags
        from .validation import check_before_heavy_imports, parse_seeds

        cfg = config_from_flags(**flags)
        cfgs = [replace(cfg, seed=s) for s in parse_seeds(seeds)] if seeds else [cfg]
        # a prefix name (timm:NAME) is looked up by its plugin's resolver, which may import torch: in the window too
        with imports_without_gc(own_process):
            check_before_heavy_imports(cfgs)
    import_the_engine(own_process)
    from ..distributed.world import is_main_process
    from .run import run

    def report(row, out):
        if is_main_process():  # under torchrun, one line per run, not one per rank
            echo(run_line(row, out))
        return row

    if resume is not None:
        from .resume import resume_run

        row, out = resume_run(resume, flags["out"], [g for g in given if g != "resume"], flags)
        return [report(row, out)]
    rows = [report(run(c), c.out) for c in cfgs]
    if seeds and is_main_process():
        for line in summary_lines(rows):
            echo(line)
    return rows


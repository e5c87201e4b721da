"""Host syncs of training, counted on the CPU: the ops that make the host wait for a GPU (a value read back, or an
output whose size depends on the data) are counted by a dispatch mode while bench trains."""
import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.engine.build import build_engine
from bench.engine.recipe import TrainRecipe
from tests.support.models import prompt_tables, tiny_clip

# .item()/float()/int()/bool() of a tensor, and the ops whose output size the host must wait for
SYNCING = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select", "equal",
           "is_nonzero"}


class HostSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in SYNCING:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode, expected", [("all", {}), ("tree_all", {}), ("unique", {"_unique2": 1})])
def test_a_training_step_syncs_only_where_its_text_mode_has_data_dependent_shapes(mode, expected):
    """Text mode ``all`` (CUDA's default while the prompt table has at most max(batch, 512) prompts) and ``tree_all``:
    no host sync in a step. ``unique`` (CUDA's default for larger tables): one, the size of ``torch.unique``'s
    output."""
    engine = build_engine(tiny_clip().float(), prompt_tables()[1],
                          TrainRecipe(text_mode=mode, epochs=1, steps_per_epoch=4, lr_warmup_steps=1))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (8,), generator=g)
    images = torch.randn(8, 3, 32, 32, generator=g)
    engine.step(images, ids // 5, ids)  # the first step builds the optimizer state
    with HostSyncs() as syncs:
        engine.step(images, ids // 5, ids)
    assert dict(syncs.ops) == expected


def test_bench_run_reads_the_device_only_on_its_log_cadence(tmp_path, monkeypatch):
    """``bench run``'s epochs in text mode ``all``, loader, NaN watch and stop checks included: two reads at each
    log step (the running loss, the NaN watch) and one at the epoch's end, none on the steps between."""
    from bench.app.run import run
    from bench.config import make_config
    from bench.engine import build

    monkeypatch.setattr(build, "text_mode_for", lambda n_prompts, batch_size, device: "all")  # CUDA's choice
    epochs = []
    train_epoch = build.Engine.train_epoch

    def counted(self, batches, n_steps, **kwargs):
        with HostSyncs() as syncs:
            stats = train_epoch(self, batches, n_steps, **kwargs)
        epochs.append((n_steps, kwargs["log_every"], dict(syncs.ops)))
        return stats

    monkeypatch.setattr(build.Engine, "train_epoch", counted)
    model = {"embed_dim": 16, "width": 32, "heads": 2, "layers": 1, "encoder_opts": (("width", 8),)}
    cfg = make_config("smoke", model=model,
                      dataset="synthetic", epochs=2, limit_train=64, limit_test=16, batch_size=8, log_every=3,
                      progress=False, save_checkpoints=False, out=str(tmp_path / "results"))
    run(cfg)
    assert len(epochs) == 2
    for n_steps, log_every, ops in epochs:
        log_steps = len([s for s in range(1, n_steps + 1) if s % log_every == 0 or s == n_steps])
        assert (n_steps, log_steps) == (8, 3)
        assert ops == {"_local_scalar_dense": 2 * log_steps + 1}

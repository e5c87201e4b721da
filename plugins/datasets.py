"""CIFAR-10 (torchvision layout or train.npz/test.npz) and a learnable synthetic set."""
from bench import hookimpl


def _cifar10(split, data_dir=None, seed=0):
    from bench.data.datasets import load_cifar10

    return load_cifar10(split, data_dir)


def _synthetic(split, data_dir=None, seed=0):
    from bench.data.datasets import make_synthetic

    return make_synthetic(split, seed)


@hookimpl
def register_datasets(register):
    register("cifar10", _cifar10,
             "CIFAR-10, 50k/10k 32x32 images: --data-dir with train.npz/test.npz, or torchvision's "
             "cifar-10-batches-py (downloaded when online)")
    register("synthetic", _synthetic,
             "10 classes of coloured gratings generated from a seed (5000 train / 1000 test, 32x32): "
             "learnable, offline, for tests and smoke runs")

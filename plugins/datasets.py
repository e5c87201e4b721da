"""CIFAR-10 (torchvision layout or train.npz/test.npz), a learnable synthetic set, CIFAR-100 (fine and coarse), STL-10,
SVHN, MNIST, Fashion-MNIST (torchvision's files) and ``imagefolder:PATH`` (your own images).

Each registration names the dataset's default template set (``templates=``): the one a run uses when --templates
is not given.
"""
from bench import hookimpl


def _cifar10(split, data_dir=None, seed=0):
    from bench.data.datasets import load_cifar10

    return load_cifar10(split, data_dir)


def _synthetic(split, data_dir=None, seed=0):
    from bench.data.datasets import make_synthetic

    return make_synthetic(split, seed)


def _torchvision_set(name):
    def factory(split, data_dir=None, seed=0):
        from bench.data.torchvision_sets import load_dataset

        return load_dataset(name, split, data_dir)

    return factory


def _imagefolder(path):
    """``imagefolder:PATH`` -> the factory of that folder; its options come from --data-opt KEY=VALUE."""
    from pathlib import Path

    from bench import BenchError

    folder = Path(path).expanduser()
    if not folder.is_dir():
        # a run's configuration keeps the path as typed, so a relative one is read from the current folder
        where = "" if folder.is_absolute() else f" (read from {Path.cwd()}: run from the folder the path was given in, " \
                                                 f"or give an absolute path)"
        raise BenchError(f"imagefolder:{path}: {path!r} is not a folder{where}; name a folder with one folder of images "
                         f"per class (or train/ and test/ holding such folders)")

    def factory(split, data_dir=None, seed=0, test_fraction=None, split_seed=None, size=32):
        from bench.data.imagefolder import dataset_name, load_imagefolder

        return load_imagefolder(path, split, seed, test_fraction=test_fraction, split_seed=split_seed, size=size,
                                name=dataset_name(f"imagefolder:{path}"))

    return factory


_DIRS = "--data-dir, default $BENCH_DATASETS_DIR or ~/.cache/bench/datasets"


@hookimpl
def register_datasets(register):
    register("cifar10", _cifar10,
             "CIFAR-10, 50k/10k 32x32 images: --data-dir with train.npz/test.npz, or torchvision's "
             "cifar-10-batches-py (downloaded when online)", templates="seed")
    register("synthetic", _synthetic,
             "10 classes of coloured gratings generated from a seed (5000 train / 1000 test, 32x32): "
             "learnable, offline, for tests and smoke runs", templates="seed")
    register("cifar100", _torchvision_set("cifar100"),
             f"CIFAR-100, 100 fine classes, 50k/10k 32x32 images: torchvision's cifar-100-python/ ({_DIRS}; "
             f"downloaded when online)", templates="openai_cifar100")
    register("cifar100_coarse", _torchvision_set("cifar100_coarse"),
             f"CIFAR-100's images in its 20 superclasses (readable names, docs/datasets.md): cifar-100-python/ "
             f"({_DIRS})", templates="openai_cifar100")
    register("stl10", _torchvision_set("stl10"),
             f"STL-10's labelled images, 10 classes, 5k/8k 96x96 (resized to --image-size at load): torchvision's "
             f"stl10_binary/ ({_DIRS}; downloaded when online)", templates="openai_stl10")
    register("svhn", _torchvision_set("svhn"),
             f"SVHN cropped digits 0-9, 73,257/26,032 32x32 images: torchvision's train_32x32.mat/test_32x32.mat "
             f"({_DIRS}; downloaded when online)", templates="openai_mnist")
    register("mnist", _torchvision_set("mnist"),
             f"MNIST digits 0-9, 60k/10k 28x28 grayscale as RGB: torchvision's MNIST/raw/ ({_DIRS}; downloaded "
             f"when online)", templates="openai_mnist")
    register("fashion_mnist", _torchvision_set("fashion_mnist"),
             f"Fashion-MNIST, 10 clothing classes, 60k/10k 28x28 grayscale as RGB: torchvision's FashionMNIST/raw/ "
             f"({_DIRS}; downloaded when online)", templates="plain_fashion_mnist")
    register("imagefolder:", _imagefolder,
             "your images in torchvision's ImageFolder layout (PATH/train/<class>/, PATH/test/<class>/, or one "
             "PATH/<class>/ tree split by --data-opt test_fraction=0.2); cached decoded; docs/datasets.md",
             prefix=True, placeholder="PATH", templates="seed")

"""Datasets download once per folder: of the threads (``bench sweep --concurrent``) or processes (``--workers``, the
ranks of ``torchrun``) that find a dataset missing at the same time, one downloads while the others wait and then
read its files; a read never meets files a download is still writing; offline, each gets the one-line error and
nothing is left behind; a download stopped part way (a full disk, Ctrl-C, SIGKILL) leaves no partial dataset, and the
next run downloads it again; a dataset that is there is read without writing anything; a dataset's folder that is a
link (kept on another disk) is completed through it. The downloads are fakes that take a moment and write the tests'
small archives."""
import errno
import fcntl
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torchvision

from bench.data.datasets import load_cifar10
from bench.data.torchvision_sets import load_dataset
from bench.errors import BenchError
from tests.support.archives import (download_log, load_cifar100_in_a_process, slow_download, write_cifar10,
                                    write_cifar100, write_mnist, write_stl10, write_svhn)
from tests.support.runs import snapshot

LOADERS = {"cifar10": (lambda root: load_cifar10("train", root), "CIFAR10", write_cifar10),
           "cifar100": (lambda root: load_dataset("cifar100", "train", root), "CIFAR100", write_cifar100)}


def in_threads(n, call):
    """``call()`` in ``n`` threads started together; each one's result or exception, in thread order."""
    barrier, results = threading.Barrier(n), [None] * n

    def one(i):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - compared by the test
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_threads_that_find_a_dataset_missing_at_once_download_it_once(tmp_path, monkeypatch, name):
    """Four runs of one process (``bench sweep --concurrent 4``) load a dataset that is not there yet: one downloads
    it, never two at once (torchvision truncates and rewrites the same archive), and all read the same arrays."""
    read, cls, write = LOADERS[name]
    log, root = tmp_path / "log", tmp_path / "data"
    monkeypatch.setattr(torchvision.datasets, cls, slow_download(write, log))
    results = in_threads(4, lambda: read(root))
    assert download_log(log) == ["download"]
    expected = write(tmp_path / "expected")["train"][0]
    for data in results:
        assert not isinstance(data, Exception), data
        np.testing.assert_array_equal(data.images, expected)
    assert not list(root.glob(".*.lock"))  # the lock goes with the download


@pytest.mark.slow  # three fresh interpreters, each importing torch
def test_processes_that_find_a_dataset_missing_at_once_download_it_once(tmp_path):
    """Three processes (``bench sweep --workers 3``, or torchrun's ranks, each of which loads the data) load a
    dataset that is not there yet: one downloads it, the others wait for it, and all read the same arrays."""
    log, root = tmp_path / "log", tmp_path / "data"
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate bench processes are
    barrier, results = context.Barrier(3), context.Queue()
    processes = [context.Process(target=load_cifar100_in_a_process, args=(root, log, barrier, results)) for _ in range(3)]
    for p in processes:
        p.start()
    got = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=30)
    assert download_log(log) == ["download"]
    images, labels = write_cifar100(tmp_path / "expected")["train"][:2]
    for result in got:
        assert not isinstance(result, str), result
        np.testing.assert_array_equal(result[0], images)
        np.testing.assert_array_equal(result[1], labels)


def test_a_read_that_finds_files_a_download_is_still_writing_waits_for_it(tmp_path, monkeypatch):
    """torchvision extracts an archive file by file, so a run that arrives mid-download finds the files "there":
    it waits for the download to end instead of reading (or failing on) a half-written file."""
    root, started = tmp_path / "data", threading.Event()

    def extracting(root, train, download):
        write_cifar100(root)
        (Path(root) / "cifar-100-python" / "train").write_bytes(b"\x80\x02half a pick")  # not yet written to the end
        started.set()
        time.sleep(0.5)
        write_cifar100(root)

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", extracting)
    downloader = threading.Thread(target=load_dataset, args=("cifar100", "train", root))
    downloader.start()
    assert started.wait(30)
    data = load_dataset("cifar100", "train", root)  # the files are all there, one of them still being written
    downloader.join(30)
    np.testing.assert_array_equal(data.images, write_cifar100(tmp_path / "expected")["train"][0])


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
@pytest.mark.parametrize("callers, folder", [(3, "data"), (1, "fresh/data")])
def test_offline_every_caller_gets_the_one_line_and_nothing_is_left_behind(tmp_path, monkeypatch, name, callers,
                                                                           folder):
    """Offline, each run gets the not-found line (three started together try in turn), and nothing stays: not the
    lock file, nor what the download made before it failed (torchvision makes the data folder, MNIST's MNIST/raw),
    nor a data folder that was not there. That last is checked with one run: of several, one may make the folder
    again while another removes it, which can leave it empty, as before downloads were locked."""
    (tmp_path / "data").mkdir()
    root = tmp_path / folder

    def offline(into, train, download):
        os.makedirs(os.path.join(into, "MNIST", "raw") if name == "mnist" else into, exist_ok=True)
        raise RuntimeError("Error downloading: Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST" if name == "mnist" else "CIFAR10", offline)
    before = snapshot(tmp_path)
    read = (lambda: load_cifar10("train", root)) if name == "cifar10" else lambda: load_dataset("mnist", "train", root)
    for result in in_threads(callers, read):
        assert isinstance(result, BenchError), result
        assert str(result).startswith(f"{'CIFAR-10' if name == 'cifar10' else 'MNIST'} not found in {root}: run once "
                                      f"with network access") and "\n" not in str(result)
    assert snapshot(tmp_path) == before


def test_a_dataset_that_is_there_loads_from_a_read_only_folder_without_writing(tmp_path, monkeypatch):
    """No lock is taken for files that are there: a read-only data folder (a shared copy) loads, and nothing is
    made in it (as root, whom the permissions do not stop, the snapshot shows it). Taking the lock would fall back
    to no lock here, so the test also refuses any attempt to take it."""
    root = tmp_path / "data"
    write_cifar10(root)
    write_cifar100(root)
    monkeypatch.setattr("bench.data.download.transient_lock", lambda path: pytest.fail(f"locked {path}"))
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda *a, **k: pytest.fail("downloaded"))
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", lambda *a, **k: pytest.fail("downloaded"))
    folders = [root, root / "cifar-10-batches-py", root / "cifar-100-python"]
    before = snapshot(root)
    for folder in folders:
        folder.chmod(0o555)
    try:
        assert len(load_cifar10("test", root)) == 2 and len(load_dataset("cifar100", "test", root)) == 100
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert snapshot(root) == before


def test_a_lock_file_left_by_a_killed_download_neither_blocks_nor_stays(tmp_path, monkeypatch):
    """A download killed mid-way leaves its lock file, but not its lock (the system drops a dead process's locks):
    the next run downloads at once and removes the file."""
    root, log = tmp_path / "data", tmp_path / "log"
    root.mkdir()
    (root / ".CIFAR-100-download.lock").touch()
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", slow_download(write_cifar100, log, seconds=0))
    assert len(load_dataset("cifar100", "train", root)) == 200
    assert download_log(log) == ["download"] and not (root / ".CIFAR-100-download.lock").exists()


def test_where_no_lock_can_be_taken_the_download_goes_ahead_unlocked(tmp_path, monkeypatch):
    """On a file system without flock a lone run still downloads, as before, rather than stopping."""
    flock = fcntl.flock

    def no_exclusive_locks(fd, operation):
        if operation & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", no_exclusive_locks)
    log = tmp_path / "log"
    monkeypatch.setattr(torchvision.datasets, "MNIST", slow_download(write_mnist, log, seconds=0))
    assert len(load_dataset("mnist", "test", tmp_path / "data")) == 10
    assert download_log(log) == ["download"]


def _halved(folder: Path):
    """Every file under ``folder`` cut to half its length: files a download was still writing when it stopped."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


# registered name -> torchvision's class, the small release it writes, and what a download puts at the top of the root
RELEASES = {"cifar10": ("CIFAR10", write_cifar10, ["cifar-10-batches-py"]),
            "cifar100": ("CIFAR100", write_cifar100, ["cifar-100-python"]),
            "cifar100_coarse": ("CIFAR100", write_cifar100, ["cifar-100-python"]),
            "stl10": ("STL10", write_stl10, ["stl10_binary"]),
            "svhn": ("SVHN", write_svhn, ["test_32x32.mat"]),  # torchvision's SVHN downloads one split's file
            "mnist": ("MNIST", write_mnist, ["MNIST"]),
            "fashion_mnist": ("FashionMNIST", lambda root: write_mnist(root, "FashionMNIST"), ["FashionMNIST"])}


def _load_test(name: str, root: Path):
    return load_cifar10("test", root) if name == "cifar10" else load_dataset(name, "test", root)


@pytest.mark.parametrize("stop", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_a_download_stopped_part_way_leaves_no_partial_dataset_and_the_next_run_downloads_it(tmp_path, monkeypatch,
                                                                                             name, stop):
    """A download that stops mid-extraction (a full disk, Ctrl-C) leaves nothing in the data folder, in each
    release's layout: not files the next run would take as the dataset (and then fail on, or read short). The next
    run downloads again; what it leaves is the dataset alone, without torchvision's archive or a staging folder."""
    cls, write, names = RELEASES[name]
    root = tmp_path / "data"
    root.mkdir()

    def stopped(into, *args, **kwargs):
        write(Path(into))
        (Path(into) / "archive.tar.gz").write_bytes(b"the archive torchvision downloaded")
        _halved(Path(into))
        raise stop

    monkeypatch.setattr(torchvision.datasets, cls, stopped)
    with pytest.raises(BenchError if isinstance(stop, OSError) else KeyboardInterrupt):
        _load_test(name, root)
    assert os.listdir(root) == []

    def complete(into, *args, **kwargs):
        write(Path(into))
        (Path(into) / "archive.tar.gz").write_bytes(b"the archive torchvision downloaded")

    log = tmp_path / "log"
    monkeypatch.setattr(torchvision.datasets, cls, slow_download(complete, log, seconds=0))
    assert len(_load_test(name, root)) == len(write(tmp_path / "expected")["test"][0])
    assert download_log(log) == ["download"] and sorted(os.listdir(root)) == names


def test_a_cifar10_folder_missing_some_of_the_splits_files_is_downloaded_again(tmp_path, monkeypatch):
    """``cifar-10-batches-py`` without all of the split's batches (left by a download that stopped, before downloads
    were staged) is not the dataset: a download completes it, where the folder alone once counted as there."""
    root, log = tmp_path / "data", tmp_path / "log"
    write_cifar10(root)
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", slow_download(write_cifar10, log, seconds=0))
    np.testing.assert_array_equal(load_cifar10("train", root).images, write_cifar10(tmp_path / "expected")["train"][0])
    assert download_log(log) == ["download"]


# a child process's CIFAR-10 download that writes every batch, the last one half, and is then killed while it waits
KILLED_MID_EXTRACTION = """
import sys, time
from pathlib import Path
import torchvision
from bench.data.datasets import load_cifar10
from tests.support.archives import write_cifar10

def extracting(into, train, download):
    write_cifar10(into)
    (Path(into) / "cifar-10-batches-py" / "data_batch_5").write_bytes(b"\\x80\\x02half a pick")
    Path(sys.argv[2]).touch()
    time.sleep(600)

torchvision.datasets.CIFAR10 = extracting
load_cifar10("train", sys.argv[1])
"""


@pytest.mark.slow  # a SIGKILLed child process
def test_a_download_killed_mid_extraction_leaves_no_partial_dataset_and_the_next_run_downloads_it(tmp_path,
                                                                                                  monkeypatch):
    """A download SIGKILLed mid-extraction (no cleanup runs) leaves no ``cifar-10-batches-py`` with a half-written
    batch that the next run would read; that run downloads again, and removes the killed one's staging folder."""
    import subprocess
    import sys

    from tests.support.processes import bench_env

    root, ready, log = tmp_path / "data", tmp_path / "ready", tmp_path / "log"
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_EXTRACTION, str(root), str(ready)], env=bench_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert child.poll() is None, f"the child exited early: {child.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the child's download"
        time.sleep(0.02)
    child.kill()
    child.communicate()
    assert not (root / "cifar-10-batches-py").exists()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", slow_download(write_cifar10, log, seconds=0))
    np.testing.assert_array_equal(load_cifar10("train", root).images, write_cifar10(tmp_path / "expected")["train"][0])
    assert download_log(log) == ["download"] and os.listdir(root) == ["cifar-10-batches-py"]


def _other_disk(monkeypatch, disk: Path):
    """``disk`` behaves as another file system: a rename into it from outside fails with EXDEV, as between mounts."""
    replace = os.replace

    def across(src, dst, *args, **kwargs):
        inside = [f"{os.path.realpath(p)}{os.sep}".startswith(f"{disk.resolve()}{os.sep}")
                  for p in (os.path.dirname(src), dst)]
        if inside[0] != inside[1]:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", across)


def _files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# a dataset's folder kept elsewhere: registered name -> torchvision's class, the release, its folder in the data dir
LINKED = {"cifar10": ("CIFAR10", write_cifar10, "cifar-10-batches-py"),
          "mnist": ("MNIST", write_mnist, "MNIST")}


@pytest.mark.parametrize("disk", ["same-disk", "other-disk"])
@pytest.mark.parametrize("name", sorted(LINKED))
def test_a_dataset_folder_that_is_a_link_is_completed_through_the_link(tmp_path, monkeypatch, name, disk):
    """A user keeps a dataset's folder on a big disk and links it into the data folder; some of its files are
    missing (CIFAR-10's data_batch_4, MNIST's raw/ altogether). The download completes the folder the link points
    to, as one into a real folder does, where a rename of the folder onto the link once failed: the link stays, and on
    another file system (a rename fails with EXDEV) each file is copied in whole, leaving no copy behind."""
    cls, write, folder = LINKED[name]
    root, big, log = tmp_path / "data", tmp_path / "big", tmp_path / "log"
    write(tmp_path / "expected")
    (big / folder).mkdir(parents=True)
    if name == "cifar10":
        write(big)
        (big / folder / "data_batch_4").unlink()
    root.mkdir()
    (root / folder).symlink_to(big / folder, target_is_directory=True)
    if disk == "other-disk":
        _other_disk(monkeypatch, big)
    monkeypatch.setattr(torchvision.datasets, cls, slow_download(write, log, seconds=0))
    load = (lambda at: load_cifar10("train", at)) if name == "cifar10" else lambda at: load_dataset(name, "train", at)
    np.testing.assert_array_equal(load(root).images, load(tmp_path / "expected").images)
    assert download_log(log) == ["download"]
    assert (root / folder).is_symlink() and os.listdir(root) == [folder]
    assert _files(big / folder) == _files(tmp_path / "expected" / folder)  # no hidden copy left beside the files


def test_a_data_folder_that_is_a_link_receives_the_download(tmp_path, monkeypatch):
    """``--data-dir`` (or ``$BENCH_DATASETS_DIR``) naming a link to a folder on another disk: the staging folder is
    made in the linked folder, so the download moves into place there with renames, and the link stays."""
    root, big, log = tmp_path / "svhn", tmp_path / "big", tmp_path / "log"
    big.mkdir()
    root.symlink_to(big, target_is_directory=True)
    _other_disk(monkeypatch, big)  # staged inside the link: no rename crosses into the other disk
    monkeypatch.setattr(torchvision.datasets, "SVHN", slow_download(write_svhn, log, seconds=0))
    assert len(load_dataset("svhn", "test", root)) == len(write_svhn(tmp_path / "expected")["test"][0])
    assert root.is_symlink() and os.listdir(big) == ["test_32x32.mat"] and download_log(log) == ["download"]


def test_a_copy_to_another_disk_killed_part_way_is_never_read_and_the_next_download_removes_it(tmp_path,
                                                                                            monkeypatch):
    """A copy into a linked folder on another disk that was killed part way (no cleanup ran) is a hidden file
    beside the dataset's, named as staging folders are: not a file any reader opens, and the next download of the
    dataset removes it."""
    root, big, log = tmp_path / "data", tmp_path / "big", tmp_path / "log"
    write_cifar10(big)
    (big / "cifar-10-batches-py" / "data_batch_4").unlink()
    killed = big / "cifar-10-batches-py" / f".CIFAR-10-download-{os.getpid() + 1}-abc123"
    killed.write_bytes(b"\x80\x02half a pick")
    root.mkdir()
    (root / "cifar-10-batches-py").symlink_to(big / "cifar-10-batches-py", target_is_directory=True)
    _other_disk(monkeypatch, big)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", slow_download(write_cifar10, log, seconds=0))
    assert len(load_cifar10("train", root)) == len(write_cifar10(tmp_path / "expected")["train"][0])
    assert not killed.exists()
    assert _files(big) == _files(tmp_path / "expected")


def test_a_dataset_file_that_is_a_link_to_a_missing_file_stays_a_link_and_gets_the_file(tmp_path, monkeypatch):
    """SVHN's ``test_32x32.mat`` linked into the data folder from a big disk that no longer holds it: the download
    writes the file the link names, whole, and leaves the link in place rather than replacing it with the file."""
    root, big, log = tmp_path / "data", tmp_path / "big", tmp_path / "log"
    root.mkdir()
    big.mkdir()
    (root / "test_32x32.mat").symlink_to(big / "test_32x32.mat")
    _other_disk(monkeypatch, big)
    monkeypatch.setattr(torchvision.datasets, "SVHN", slow_download(write_svhn, log, seconds=0))
    assert len(load_dataset("svhn", "test", root)) == len(write_svhn(tmp_path / "expected")["test"][0])
    assert (root / "test_32x32.mat").is_symlink() and os.listdir(big) == ["test_32x32.mat"]

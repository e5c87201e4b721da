"""What bench eval and bench predict feed a model: features cached per split contents and precision, image files
decoded as image folders decode them, and an OpenAI state dict prompted as --open-clip prompts the same weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.datasets import ArrayDataset
from bench.errors import BenchError


def test_cached_features_belong_to_the_split_contents_and_precision_they_were_computed_from(tmp_path, monkeypatch):
    """Two folders holding a split of one name and size (--data-dir A, then B): B's images are encoded, not A's
    features reused; the same split again is read from the cache; another precision is encoded again."""
    import bench.evaluation.suite as suite

    encoded = []
    monkeypatch.setattr(suite, "image_features", lambda model, x, autocast_dtype=None: encoded.append(
        float(x.float().mean())) or x.float().mean(dim=(1, 2, 3))[:, None])
    labels = np.arange(4) % 2
    zeros = ArrayDataset(np.zeros((4, 8, 8, 3), np.uint8), labels, ("a", "b"), "cifar10/test")
    noise = ArrayDataset(np.full((4, 8, 8, 3), 200, np.uint8), labels, ("a", "b"), "cifar10/test")
    cache = suite.FeatureCache(tmp_path / "features")
    first = suite.features(None, zeros, "cpu", None, cache, "ckpt-x")
    other = suite.features(None, noise, "cpu", None, cache, "ckpt-x")
    assert encoded == [0.0, 200.0] and not torch.equal(first, other)
    again = suite.features(None, zeros, "cpu", None, suite.FeatureCache(tmp_path / "features"), "ckpt-x")
    assert torch.equal(again, first) and len(encoded) == 2  # from the file, not encoded again
    suite.features(None, zeros, "cpu", torch.bfloat16, cache, "ckpt-x")
    assert len(encoded) == 3


def test_predict_takes_the_centre_square_as_image_folders_do(tmp_path):
    """A 96x32 image in red | green | blue thirds: the centre square is green, where squashing the whole image to
    32x32 would mix all three (bench predict decodes its files with imagefolder's decode)."""
    from bench.data.imagefolder import decode

    thirds = np.zeros((32, 96, 3), np.uint8)
    thirds[:, :32, 0], thirds[:, 32:64, 1], thirds[:, 64:, 2] = 255, 255, 255
    Image.fromarray(thirds).save(tmp_path / "wide.png")
    image = decode(tmp_path / "wide.png", 32)
    assert image.shape == (32, 32, 3) and image[..., 1].min() == 255 and image[..., [0, 2]].max() == 0


def test_an_image_too_large_for_pil_is_one_line(tmp_path, monkeypatch):
    """PIL refuses images of more than twice MAX_IMAGE_PIXELS with DecompressionBombError, which is no OSError."""
    from bench.app.evaluate import check_image
    from bench.data.imagefolder import decode

    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels is then more than twice the limit
    with pytest.raises(BenchError, match="DecompressionBombError"):
        check_image(str(tmp_path / "big.png"))
    with pytest.raises(BenchError, match="cannot be read .DecompressionBombError"):
        decode(tmp_path / "big.png", 32)


def test_predict_decodes_each_file_once_at_the_models_input_size(tmp_path, run_cli, monkeypatch, one_thread):
    """bench predict of a model whose input is not 32 px decodes each image file once, straight to that size (a
    file's header is read first, so a bad path is said before the model loads), and its top-k classes and
    probabilities are the zero-shot classifier's on exactly those decoded images."""
    import bench.data.imagefolder as imagefolder
    from bench.app.evaluate import class_probabilities, load_model, predict_images
    from bench.clip.templates import load_templates
    from tests.support.runs import TINY

    out = tmp_path / "res"
    code, _, err = run_cli("run", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "16", "--limit-test", "8",
                           "--batch-size", "8", "--image-size", "64", "--device", "cpu", *TINY, "--out", out)
    assert code == 0, err
    (ckpt,) = out.glob("runs/*/last.pt")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(96, 40), (20, 20), (64, 64)]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    decoded = []
    real_decode = imagefolder.decode
    monkeypatch.setattr(imagefolder, "decode", lambda path, size: decoded.append((str(path), size)) or
                        real_decode(path, size))
    predicted = list(predict_images(ckpt, paths, top_k=2, device="cpu"))
    assert decoded == [(p, 64) for p in paths]

    model, cfg, saved = load_model(ckpt, torch.device("cpu"))
    images = np.stack([real_decode(p, 64) for p in paths])
    probs = class_probabilities(model, cfg, saved, images, saved["classes"], load_templates(cfg.templates), "cpu")
    expected = [[(saved["classes"][int(i)], float(v)) for v, i in zip(*row.topk(2))] for row in probs]
    assert [ranked for _, ranked in predicted] == expected and [p for p, _ in predicted] == paths


def test_an_openai_state_dict_is_prompted_with_each_datasets_published_templates(monkeypatch):
    """The same sets bench eval --open-clip uses: CLIP's CIFAR-10 prompts on cifar10, its STL-10 and MNIST prompts
    there, bench's own Fashion-MNIST set (prompts.md has none), not CIFAR-10's prompts everywhere."""
    import bench.app.evaluate as evaluate
    from bench.app.dataset_lookup import Target
    from bench.config import RunConfig

    asked = {}

    def load_target(name, templates_name, *args, **kwargs):
        asked[name] = templates_name
        return Target(name, templates_name, [], ArrayDataset(np.zeros((2, 8, 8, 3), np.uint8), np.arange(2), ("a", "b"),
                                                             f"{name}/test"), 8)

    monkeypatch.setattr(evaluate, "load_target", load_target)
    monkeypatch.setattr(evaluate, "template_sets", lambda names: {n: ["a photo of a {}."] for n in names})
    run = evaluate.LoadedCheckpoint(None, RunConfig(), {}, True, None, "openai_state_dict", "", "openai", 77, None,
                                    {}, None, None, ())
    evaluate.plan_evaluations(run, ["cifar10", "stl10", "mnist", "fashion_mnist"], None, None, None)
    assert asked == {"cifar10": "openai", "stl10": "openai_stl10", "mnist": "openai_mnist",
                     "fashion_mnist": "plain_fashion_mnist"}

"""The data engine's augmentation, the loss option and the fast preset."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bench.clip.loss import ClipLoss
from bench.data.datasets import make_synthetic
from bench.data.loader import DeviceLoader, batch_flip_crop

from tests.support.runs import TINY


def per_image_flip_crop(images, generator, pad):
    """The definition, one image at a time: flip it, pad it, cut the window at the drawn offset (random
    draws in the order batch_flip_crop makes them)."""
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    shifts = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    out = []
    for i in range(n):
        img = images[i].flip(2) if flip[i] else images[i]
        padded = F.pad(img, (pad, pad, pad, pad))
        out.append(padded[:, shifts[0, i]:shifts[0, i] + h, shifts[1, i]:shifts[1, i] + w])
    return torch.stack(out)


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_batched_flip_crop_equals_the_per_image_definition(pad):
    """The one-op batched crop gives exactly the per-image result for the same random draws."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    fast = batch_flip_crop(images, torch.Generator().manual_seed(7), pad)
    slow = per_image_flip_crop(images, torch.Generator().manual_seed(7), pad)
    assert torch.equal(fast, slow)


def test_flip_crop_draws_every_offset_and_orientation():
    """Each of the 2 x 9 x 9 (flip, dy, dx) outcomes occurs, about equally often, and nothing else does."""
    image = (torch.arange(64, dtype=torch.uint8) + 1).view(1, 1, 8, 8)  # every pixel distinct, none zero
    outcomes = {}
    for flip in (False, True):
        padded = F.pad(image[0].flip(2) if flip else image[0], (4, 4, 4, 4))
        for dy in range(9):
            for dx in range(9):
                outcomes[padded[:, dy:dy + 8, dx:dx + 8].numpy().tobytes()] = (flip, dy, dx)
    out = batch_flip_crop(image.expand(8100, 1, 8, 8), torch.Generator().manual_seed(0), 4)
    counts = pd.Series([outcomes[o.numpy().tobytes()] for o in out]).value_counts()
    assert len(counts) == 162 and counts.min() > 20 and counts.max() < 90  # expected 50 each


def test_device_loader_batch_is_the_batched_transform_of_its_rows():
    """A DeviceLoader batch is flip+crop of the selected rows, normalised to [-1, 1], labels and prompts aligned."""
    data = make_synthetic("train", 0, n=128)
    loader = DeviceLoader(data, 16, "cpu", n_templates=5, generator=torch.Generator().manual_seed(3))
    idx = torch.randperm(128)[:16]
    batch = loader.make_batch(idx)
    rows = torch.from_numpy(data.images[idx.numpy()]).permute(0, 3, 1, 2)
    expected = batch_flip_crop(rows, torch.Generator().manual_seed(3), 4).float() * (2 / 255) - 1
    assert torch.allclose(batch.images, expected, atol=1e-6)
    assert torch.equal(batch.labels, torch.as_tensor(data.labels[idx.numpy()]))
    assert torch.equal(batch.prompt_ids // 5, batch.labels)


def test_multipositive_equals_clip_when_classes_are_distinct_and_differs_otherwise():
    """Same-class pairs are the only difference between the two losses."""
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    distinct = torch.arange(6)
    assert torch.allclose(ClipLoss("clip")(img, txt, scale, distinct), ClipLoss("multipositive")(img, txt, scale, distinct))
    shared = torch.tensor([0, 0, 1, 1, 2, 2])
    assert not torch.allclose(ClipLoss("clip")(img, txt, scale, shared), ClipLoss("multipositive")(img, txt, scale, shared))


def test_multipositive_hand_computed():
    """Two images of one class, uniform targets over both captions: -log(1/2) in each direction."""
    logits_features = torch.eye(2)
    loss = ClipLoss("multipositive")(logits_features, logits_features, torch.tensor(0.0), torch.tensor([3, 3]))
    assert float(loss) == pytest.approx(np.log(2))


@pytest.mark.parametrize("loss", ["clip", "multipositive"])
def test_run_with_loss_option(run_cli, loss):
    """``bench run --loss`` trains with that loss and records it in runs.csv."""
    code, out, err = run_cli("run", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "32",
                             "--limit-test", "32", "--batch-size", "16", "--device", "cpu", "--loss", loss,
                             "--no-checkpoints", *TINY)
    assert code == 0, err
    row = pd.read_csv("results/runs.csv").iloc[-1]
    assert row["loss"] == loss and np.isfinite(row["final_train_loss"])


def test_fast_preset_names_its_encoder_as_a_default():
    """The fast preset picks the wide airbench encoder and the multi-positive loss; an explicit encoder wins."""
    from bench.config import make_config

    cfg = make_config("fast")
    assert (cfg.model.encoder, cfg.loss, cfg.label_smoothing, cfg.batch_size) == ("airbench_wide", "multipositive",
                                                                                   0.0, 1024)
    assert make_config("fast", model={"encoder": "modified_resnet"}).model.encoder == "modified_resnet"
    assert make_config("reference").model.encoder == "modified_resnet"


def test_fast96_preset_is_a_recipe_on_airbench96s_tower():
    from bench.config import make_config

    cfg = make_config("fast96")
    assert (cfg.model.encoder, cfg.loss, cfg.cutout, cfg.batch_size) == ("airbench96", "multipositive", 12, 1024)
    assert make_config("fast96", model={"encoder": "modified_resnet"}).model.encoder == "modified_resnet"


def test_airbench96_groups_are_three_convs_with_the_pooled_input_added_back():
    """depth=3: each group is conv, pool, norm, GELU (x0), then conv, norm, GELU, conv, norm, + x0, GELU, as
    airbench96's ConvGroup; depth 2 keeps airbench94's layout (and its state-dict keys)."""
    from bench.host.manager import get_entry

    torch.manual_seed(0)
    net = get_entry("encoders", "airbench96").factory(embed_dim=8, image_size=32, widths=(8, 16, 16)).eval()
    group = net.groups[0]
    x = torch.randn(2, 24, 16, 16)
    conv1, pool, bn1, _ = group.first
    conv2, bn2, _, conv3, bn3 = group.rest
    with torch.no_grad():
        x0 = F.gelu(bn1(pool(conv1(x))))
        expected = F.gelu(bn3(conv3(F.gelu(bn2(conv2(x0))))) + x0)
        torch.testing.assert_close(group(x), expected)
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == 1 + 3 * 3
    shallow = get_entry("encoders", "airbench").factory(embed_dim=8, image_size=32, widths=(8, 16, 16))
    assert "groups.0.0.weight" in shallow.state_dict() and "groups.0.first.0.weight" in net.state_dict()


def test_airbench_translate_tta_is_airbench94s_second_level():
    """Eval features with ``translate_tta``: half the mirror pair, a quarter each of the pair shifted one
    pixel up-left and down-right with reflection padding; training features are untouched."""
    from bench.host.manager import get_entry

    torch.manual_seed(0)
    factory = get_entry("encoders", "airbench").factory
    net = factory(embed_dim=8, image_size=32, widths=(8, 16, 16), translate_tta=True).eval()
    x = torch.randn(3, 3, 32, 32)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")

    def mirror(v):
        return (net.features(v) + net.features(v.flip(3))) / 2

    expected = 0.5 * mirror(x) + 0.25 * mirror(padded[..., :32, :32]) + 0.25 * mirror(padded[..., 2:, 2:])
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected)
        assert not torch.allclose(net(x), mirror(x), atol=1e-4)
        torch.testing.assert_close(net.train()(x), net.features(x))


def test_airbench_whitening_stem_whitens_the_training_patches():
    """whiten=True: after setup_from_data, the stem's first 12 channels (bias aside) map the training images' 2x2
    patches to outputs whose second-moment matrix is diagonal with entries lambda / (lambda + eps), i.e. the
    identity wherever a direction has more energy than eps; the other 12 channels are their negations, and the
    stem's weights are frozen while its bias trains."""
    from bench.data.loader import normalize, to_device_uint8
    from bench.host.manager import get_entry
    from bench_plugins.airbench import WHITEN_EPS

    images = to_device_uint8(make_synthetic("train", n=256).images, "cpu")
    net = get_entry("encoders", "airbench").factory(embed_dim=8, image_size=32, widths=(8, 16, 16), whiten=True)
    assert not net.stem.weight.requires_grad and net.stem.bias.requires_grad
    before = net.stem.weight.detach().clone()
    net.setup_from_data(images)
    assert not torch.equal(before, net.stem.weight)
    x = normalize(images).double()
    with torch.no_grad():
        out = F.conv2d(x, net.stem.weight.double())  # (N, 24, 31, 31): every 2x2 patch
    flat = out.permute(0, 2, 3, 1).reshape(-1, 24)
    moment = flat[:, :12].T @ flat[:, :12] / len(flat)
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    torch.testing.assert_close(moment, torch.diag(eigenvalues / (eigenvalues + WHITEN_EPS)), atol=2e-4, rtol=1e-3)
    assert float(moment.diagonal()[:3].min()) > 0.995  # the strong directions come out with unit variance
    torch.testing.assert_close(flat[:, 12:], -flat[:, :12])
    plain = get_entry("encoders", "airbench").factory(embed_dim=8, image_size=32, widths=(8, 16, 16))
    weights = plain.stem.weight.detach().clone()
    plain.setup_from_data(images)  # without whiten the stem is an ordinary learned conv, untouched by the data
    assert plain.stem.weight.requires_grad and torch.equal(weights, plain.stem.weight)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_the_schedule_warms_up_linearly_then_decays_to_zero_as_named(kind):
    """``--schedule``: lr(step) = peak * (step + 1) / warmup during the warm-up, then peak * (1 - p) (linear) or
    peak * (1 + cos(pi p)) / 2 (cosine) at progress p through the remaining steps, reaching 0 at the end."""
    import math

    from bench.engine.optim import build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = build_scheduler(optimizer, total_steps=14, warmup_steps=4, kind=kind)
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    decay = (lambda p: 1 - p) if kind == "linear" else (lambda p: (1 + math.cos(math.pi * p)) / 2)
    expected = [0.5 * (s + 1) / 4 for s in range(4)] + [0.5 * decay((s - 4) / 10) for s in range(4, 15)]
    assert lrs == pytest.approx(expected, abs=1e-12) and lrs[-1] == 0.0


def test_a_run_with_test_time_augmentation_also_reports_top1_without_it(tmp_path, run_cli):
    """An airbench run (mirror TTA on) has zeroshot_top1_no_tta in its row: the top-1 of its final weights with
    the encoder's TTA switched off, recomputed here from last.pt; with TTA off there is no such column."""
    from bench.app.evaluate import load_model
    from bench.clip.templates import fill
    from bench.data.loader import to_device_uint8
    from bench.evaluation.zero_shot import build_zero_shot_classifier, zero_shot_metrics
    from bench.host.manager import get_entry

    flags = ["--encoder", "airbench", "--encoder-opt", "widths=[8,16,16]", "--dataset", "synthetic", "--epochs", "1",
             "--limit-train", "64", "--limit-test", "64", "--batch-size", "16", "--device", "cpu", *TINY[:8]]
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "tta")
    assert code == 0, err
    row = pd.read_csv(tmp_path / "tta" / "runs.csv").iloc[0]
    model, cfg, _ = load_model(next((tmp_path / "tta" / "runs").iterdir()) / "last.pt", "cpu")
    test = get_entry("datasets", "synthetic").create("test", None, 0).subset(64)
    tpl = get_entry("templates", cfg.templates).create()
    tokenizer = get_entry("tokenizers", cfg.tokenizer).create(77, fill(tpl, test.classes))
    classifier = build_zero_shot_classifier(model, list(test.classes), tpl, tokenizer, "cpu")
    images, labels = to_device_uint8(test.images, "cpu"), torch.as_tensor(test.labels)
    assert zero_shot_metrics(model, images, labels, classifier)["top1"] == row["zeroshot_top1"]
    model.visual.test_time_augmentation = False
    assert zero_shot_metrics(model, images, labels, classifier)["top1"] == row["zeroshot_top1_no_tta"]
    # airbench's timed span: all training plus the final (TTA) evaluation, not the no-TTA pass after it
    history = pd.read_csv(next((tmp_path / "tta" / "runs").iterdir()) / "history.csv")
    assert row["train_eval_seconds"] == pytest.approx(row["train_seconds"] + history["eval_seconds"].iloc[-1],
                                                      abs=2e-3)
    assert row["train_eval_seconds"] > row["train_seconds"]

    # the column's absence needs only a short run (the later flags override the ones above)
    code, _, err = run_cli("run", *flags, "--encoder-opt", "flip_tta=false", "--limit-train", "16",
                           "--limit-test", "16", "--out", tmp_path / "plain")
    assert code == 0, err
    assert "zeroshot_top1_no_tta" not in pd.read_csv(tmp_path / "plain" / "runs.csv").columns


def test_a_process_prewarm_leaves_the_run_bit_identical(tmp_path, run_cli):
    """--prewarm-steps 3 trains a throwaway copy first (here airbench with its whitening stem, on Muon, so every
    kind of state is touched); the run's metrics, loss curve and final weights equal those of the same command
    without it, and its row says how long the prewarm took, outside train_seconds."""
    flags = ["--encoder", "airbench", "--encoder-opt", "widths=[8,16,16]", "--encoder-opt", "whiten=true",
             "--optimizer", "muon", "--lr", "0.5", "--text-lr", "1e-3", "--dataset", "synthetic", "--epochs", "2",
             "--limit-train", "64", "--limit-test", "64", "--batch-size", "16", "--device", "cpu", *TINY[:8]]
    for name, extra in (("plain", []), ("warm", ["--prewarm-steps", "3"])):
        code, _, err = run_cli("run", *flags, *extra, "--out", tmp_path / name)
        assert code == 0, err
    plain, warm = (pd.read_csv(tmp_path / n / "runs.csv").iloc[0] for n in ("plain", "warm"))
    for column in ("zeroshot_top1", "zeroshot_top5", "final_train_loss", "config_id"):
        assert plain[column] == warm[column], column
    assert plain["prewarm_seconds"] == 0 and warm["prewarm_seconds"] > 0
    weights = [torch.load(next((tmp_path / n / "runs").iterdir()) / "last.pt", weights_only=True)["model"]
               for n in ("plain", "warm")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

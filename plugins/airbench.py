"""An airbench94-style convolutional encoder: the vision tower of the ``fast`` preset.

Shaped after Keller Jordan's cifar10-airbench network (a 2x2 stem conv, then three groups of
conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU at widths 64/256/256, then a global
max-pool), which trains to 94% on CIFAR-10 in seconds. Departures, because here it is a CLIP tower
trained by bench's own loop (its optimizers, the contrastive loss):

- the stem is an ordinary learned conv unless ``whiten=True``: then, as airbench, it is a frozen 2x2
  patch-whitening conv (the eigenvectors of the training patches' second moments, scaled by their inverse
  square roots, and their negations). A factory only gets sizes, so the weights are
  set by ``setup_from_data``, the optional encoder method bench calls with the training images before a fresh
  run's first step (docs/plugins.md). As airbench94, the stem's bias trains for the first
  ``whiten_bias_epochs`` (3) epochs only, then is frozen: the encoder lists it in ``frozen_after_epochs``, the
  optional attribute through which any encoder names parameters that train for a limited span;
- the head is a linear projection to the CLIP embedding width instead of a 10-way classifier;
- ``flip_tta`` (default on): in eval mode the features are the mean over the image and its mirror
  image, as airbench's evaluation does; training is unchanged. It doubles evaluation cost only.
- ``translate_tta`` (default off): airbench94's second TTA level on top: half the weight on the mirror
  pair, a quarter each on the pair shifted one pixel up-left and down-right (reflection padding). Six
  passes per test image; training is unchanged.
- ``test_time_augmentation``: True when either TTA is on; bench sets it False for one more final evaluation
  with a single plain view, so a run's row has ``zeroshot_top1_no_tta`` beside the TTA figure.
- ``depth=3`` (``airbench96``): each group has a third conv + BatchNorm, and the group's pooled activation is
  added back before the last GELU, as airbench96's ConvGroup.

Kept from airbench: BatchNorm with a frozen scale (only the shift trains) and low running-stat
momentum, identity (dirac) initialisation of each conv's first input channels, no conv biases.
"""
from bench import hookimpl
from bench.errors import BenchError
from bench.factory_options import boolean, int_tuple, number


WHITEN_IMAGES = 5000  # airbench estimates the patch statistics on the first 5000 training images
WHITEN_EPS = 5e-4  # and adds this to each eigenvalue before the inverse square root


def whitening_weights(images, eps: float = WHITEN_EPS):
    """``(2 * 3 * 2 * 2, 3, 2, 2)`` conv weights that whiten the 2x2 patches of ``images`` (float NCHW): the
    eigenvectors of the patches' (uncentred) second-moment matrix, largest first, each divided by the square root
    of its eigenvalue plus ``eps``, then the same negated (airbench's ``init_whitening_conv``)."""
    import torch

    c = images.shape[1]
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, c * 4).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    scaled = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0).reshape(c * 4, c, 2, 2)
    return torch.cat([scaled, -scaled]).float()


def _build(name, embed_dim, image_size, widths, flip_tta, translate_tta, bn_momentum, whiten, depth,
           whiten_bias_epochs):
    owner = f"encoder {name!r}"
    widths = int_tuple(owner, "widths", widths, 3, "the channels of its 3 conv groups, e.g. widths=[64,256,256]")
    if depth not in (2, 3) or isinstance(depth, bool):
        raise BenchError(f"{owner}: depth must be 2 (airbench94's groups) or 3 (airbench96's, with a residual third "
                         f"conv), got {depth!r}")
    flip_tta = boolean(owner, "flip_tta", flip_tta)
    translate_tta = boolean(owner, "translate_tta", translate_tta)
    bn_momentum = number(owner, "bn_momentum", bn_momentum, 0, 1, "airbench uses 0.4 (1 = only the last batch)",
                         low_open=True)
    whiten = boolean(owner, "whiten", whiten)
    whiten_bias_epochs = number(owner, "whiten_bias_epochs", whiten_bias_epochs, 0, 10**6,
                                "airbench trains the whitening bias for 3 epochs")
    if image_size < 16:
        raise BenchError(f"{owner} needs --image-size of at least 16 (three 2x pools after a 2x2 stem), got {image_size}")
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FrozenScaleBatchNorm(nn.BatchNorm2d):
        """BatchNorm whose scale stays 1: the conv that follows absorbs any scale (airbench)."""

        def __init__(self, channels):
            super().__init__(channels, eps=1e-12, momentum=bn_momentum)
            self.weight.requires_grad = False

    class Conv(nn.Conv2d):
        def __init__(self, c_in, c_out):
            super().__init__(c_in, c_out, 3, padding="same", bias=False)

        def reset_parameters(self):
            super().reset_parameters()
            # the first c_in filters start as the identity, so a fresh group passes its input through
            nn.init.dirac_(self.weight.data[:self.weight.shape[1]])

    class ConvGroup(nn.Sequential):
        def __init__(self, c_in, c_out):
            super().__init__(Conv(c_in, c_out), nn.MaxPool2d(2), FrozenScaleBatchNorm(c_out), nn.GELU(),
                             Conv(c_out, c_out), FrozenScaleBatchNorm(c_out), nn.GELU())

    class ResidualGroup(nn.Module):
        """airbench96's group: conv, pool, norm, GELU (= x0), conv, norm, GELU, conv, norm, + x0, GELU."""

        def __init__(self, c_in, c_out):
            super().__init__()
            self.first = nn.Sequential(Conv(c_in, c_out), nn.MaxPool2d(2), FrozenScaleBatchNorm(c_out), nn.GELU())
            self.rest = nn.Sequential(Conv(c_out, c_out), FrozenScaleBatchNorm(c_out), nn.GELU(),
                                      Conv(c_out, c_out), FrozenScaleBatchNorm(c_out))

        def forward(self, x):
            x = self.first(x)
            return F.gelu(self.rest(x) + x)

    class AirbenchEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            stem_width = 24  # airbench's whitening width: 2 x 3 channels x 2 x 2 patch
            self.stem = nn.Conv2d(3, stem_width, 2, padding=0, bias=True)
            self.stem.weight.requires_grad = not whiten  # a whitening stem is set from data, then frozen
            # and its bias, after a few epochs in which the first layer's shifts settle (bench's optimizer reads this)
            self.frozen_after_epochs = {"stem.bias": whiten_bias_epochs} if whiten else {}
            groups, c_in = [], stem_width
            for width in widths:
                groups.append((ConvGroup if depth == 2 else ResidualGroup)(c_in, width))
                c_in = width
            self.groups = nn.Sequential(*groups)
            self.proj = nn.Linear(c_in, embed_dim, bias=False)
            self.flip_tta = flip_tta
            self.translate_tta = translate_tta
            # bench's switch for one plain view at evaluation (its rows then report top-1 without TTA as well)
            self.test_time_augmentation = flip_tta or translate_tta

        def setup_from_data(self, images):
            """Whitening stem (``whiten=True``): its weights from the first training images' 2x2 patches."""
            if whiten:
                from bench.data.loader import normalize

                with torch.no_grad():
                    self.stem.weight.copy_(whitening_weights(normalize(images[:WHITEN_IMAGES])))

        def features(self, x):
            x = self.groups(F.gelu(self.stem(x)))
            return self.proj(torch.amax(x, dim=(2, 3)))  # global max-pool, as airbench's final MaxPool2d

        def mirrored(self, x):
            return (self.features(x) + self.features(x.flip(3))) / 2 if self.flip_tta else self.features(x)

        def forward(self, x):
            if self.training or not self.test_time_augmentation:
                return self.features(x)
            if not self.translate_tta:
                return self.mirrored(x)
            h, w = x.shape[-2:]
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            shifted = (self.mirrored(padded[..., :h, :w]) + self.mirrored(padded[..., 2:, 2:])) / 2
            return (self.mirrored(x) + shifted) / 2

    return AirbenchEncoder()


def _factory(name, default_widths, default_translate_tta, default_depth=2):
    """The factory of ``name``: its --encoder-opt keys are the arguments after ``image_size``."""

    def factory(embed_dim, image_size, widths=default_widths, flip_tta=True, translate_tta=default_translate_tta,
                bn_momentum=0.4, whiten=False, depth=default_depth, whiten_bias_epochs=3):
        return _build(name, embed_dim, image_size, widths, flip_tta, translate_tta, bn_momentum, whiten, depth,
                      whiten_bias_epochs)

    return factory


@hookimpl
def register_encoders(register):
    register("airbench", _factory("airbench", (64, 256, 256), False),
             "airbench94-style net: 2x2 stem, conv groups 64/256/256 with max-pool, frozen-scale BatchNorm, GELU, "
             "global max-pool, linear to embed; eval averages image and mirror (flip_tta=True), and one-pixel shifts "
             "(translate_tta=True); whiten=True: a frozen patch-whitening stem set from the training images",
             family="convnet", source="bench (after KellerJordan/cifar10-airbench)", params=2_101_304)
    register("airbench_wide", _factory("airbench_wide", (96, 384, 384), True),
             "airbench at widths 96/384/384 (the fast preset's tower); eval averages mirror and one-pixel shifts, as "
             "airbench94's default evaluation (translate_tta=True)",
             family="convnet", source="bench (after KellerJordan/cifar10-airbench)", params=4_617_144)
    register("airbench96", _factory("airbench96", (128, 384, 512), True, 3),
             "airbench96's net (the fast96 preset's tower): groups of three convs with a residual, widths "
             "128/384/512; eval averages mirror and one-pixel shifts", family="convnet",
             source="bench (after KellerJordan/cifar10-airbench)", params=10_175_800)

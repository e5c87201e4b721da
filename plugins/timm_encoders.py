"""timm vision encoders: a curated set adapted to 32 px (``timm/<name>``) and any timm model (``timm:<name>``).

The curated encoders change what CIFAR papers change so that 32 px inputs keep a spatial map until the
pool: ResNets take a 3x3 stride-1 first conv and drop the stem max pool (He et al. 2016, sec. 4.2; 8x
downsampling, a 4x4 final map); EfficientNet, MobileNet and RegNet keep their blocks but their stem conv
gets stride 1 (16x, a 2x2 map); ConvNeXt's 4x4 patchify stem becomes a 3x3 stride-1 conv (8x, a 4x4 map);
ViTs use 4x4 patches at ``img_size`` 32 (64 tokens). Without this, a 32x-downsampling trunk pools a 1x1 map.

Every encoder is a :class:`bench.clip.timm_model.TimmModel`: the trunk's features are pooled (``pool``, default
``avg``) and projected to the CLIP width (``proj``, default ``linear`` without bias), as open_clip does.
``--encoder-opt`` keys go to TimmModel (``pool``, ``proj``, ``proj_bias``, ``drop``) or, for any other key, to
``timm.create_model`` (``drop_path_rate=0.1``). Weights are never pretrained: bench runs offline.
"""
from __future__ import annotations

import importlib.metadata

from bench import hookimpl


def _resnet_stem(trunk):
    from torch import nn

    conv = nn.Conv2d(3, trunk.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet conv init
    trunk.conv1 = conv
    trunk.maxpool = nn.Identity()


def _convnext_stem(trunk):
    from torch import nn

    # timm's own patch_size=2 also makes stage 0 stride 2 (32x in total), so replace the patchify conv.
    patchify = trunk.stem[0]
    trunk.stem[0] = nn.Conv2d(3, patchify.out_channels, 3, stride=1, padding=1)


def _stem_stride_1(path):
    """Set the stride of the stem conv at attribute ``path`` (e.g. ``"stem.conv"``) to 1; padding keeps the size."""

    def adapt(trunk):
        conv = trunk
        for part in path.split("."):
            conv = getattr(conv, part)
        conv.stride = (1, 1)

    return adapt


# name -> (timm model, family, timm kwargs, stem adaptation, what changed for 32 px)
CURATED = {
    "resnet18": ("resnet18", "resnet", {}, _resnet_stem, "3x3/1 stem conv, no max pool: 4x4 final map"),
    "resnet34": ("resnet34", "resnet", {}, _resnet_stem, "3x3/1 stem conv, no max pool: 4x4 final map"),
    "resnet50": ("resnet50", "resnet", {}, _resnet_stem, "3x3/1 stem conv, no max pool: 4x4 final map"),
    "convnext_atto": ("convnext_atto", "convnext", {}, _convnext_stem, "3x3/1 stem conv instead of 4x4/4 patchify: 4x4 final map"),
    "convnext_femto": ("convnext_femto", "convnext", {}, _convnext_stem, "3x3/1 stem conv instead of 4x4/4 patchify: 4x4 final map"),
    "vit_tiny_patch4_32": ("vit_tiny_patch16_224", "vit", {"patch_size": 4}, None, "ViT-Ti, 4x4 patches at img_size 32: 64 tokens"),
    "vit_small_patch4_32": ("vit_small_patch16_224", "vit", {"patch_size": 4}, None, "ViT-S, 4x4 patches at img_size 32: 64 tokens"),
    "efficientnet_b0": ("efficientnet_b0", "efficientnet", {}, _stem_stride_1("conv_stem"), "stride-1 stem conv: 2x2 final map"),
    "mobilenetv3_large_100": ("mobilenetv3_large_100", "mobilenet", {}, _stem_stride_1("conv_stem"), "stride-1 stem conv: 2x2 final map"),
    "regnetx_002": ("regnetx_002", "regnet", {}, _stem_stride_1("stem.conv"), "RegNetX-200MF, stride-1 stem conv: 2x2 final map"),
}
# each tower's parameter count at embed width 512 and 32 px, which `bench list encoders` shows without importing
# timm (a test builds every tower and checks these counts)
PARAMS = {
    "resnet18": 11_430_976, "resnet34": 21_539_136, "resnet50": 24_548_928, "convnext_atto": 3_537_520,
    "convnext_femto": 5_028_384, "vit_tiny_patch4_32": 5_459_136, "vit_small_patch4_32": 21_535_104,
    "efficientnet_b0": 4_662_908, "mobilenetv3_large_100": 4_857_392, "regnetx_002": 2_504_208,
}


def _curated_factory(model_name, timm_kwargs, stem):
    def factory(embed_dim, image_size, **opts):
        from bench.clip.timm_model import TimmModel

        return TimmModel(model_name, embed_dim, image_size, stem=stem, **{**timm_kwargs, **opts})

    return factory


def _any_timm(model_name: str):
    """Resolve ``timm:<model_name>`` to a factory; unknown names fail here, before any data is read."""
    import timm

    from bench.errors import UnknownNameError

    if not timm.is_model(model_name):
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else "; timm.list_models() lists them"
        raise UnknownNameError(f"unknown timm model {model_name!r}{hint}")
    return _curated_factory(model_name, {}, None)


def _timm_version() -> str:
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@hookimpl
def register_encoders(register):
    source = f"timm {_timm_version()}"
    for name, (model_name, family, kwargs, stem, change) in CURATED.items():
        register(f"timm/{name}", _curated_factory(model_name, kwargs, stem),
                 f"timm {model_name}, random init; 32 px: {change}; avg pool + linear projection",
                 family=family, source=source, params=PARAMS[name])
    register("timm:", _any_timm,
             "any timm model by name, random init, timm's own stem (no 32 px surgery), img_size passed when "
             "the model takes it; avg pool + linear projection; --encoder-opt goes to timm.create_model",
             prefix=True, placeholder="model_name", family="any", source=source)

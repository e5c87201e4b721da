"""The reference vision tower, OpenAI's ModifiedResNet, and bench's 32 px variant."""
from bench import hookimpl
from bench.errors import BenchError
from bench.factory_options import int_tuple, positive_int


def _modified_resnet(stem):
    name = "modified_resnet" if stem == "openai" else "modified_resnet_cifar"
    owner = f"encoder {name!r}"

    def factory(embed_dim, image_size, layers=(2, 2, 2, 2), width=32, heads=None):
        layers = int_tuple(owner, "layers", layers, 4, "the blocks of its 4 stages, e.g. layers=[2,2,2,2]")
        width = positive_int(owner, "width", width, "its stem's first conv has width/2 channels; e.g. width=32",
                             minimum=2)
        features = width * 32  # the attention pool's width
        heads = features // 64 if heads is None else heads  # OpenAI's default; width >= 2 makes it >= 1
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or features % heads:
            raise BenchError(f"{owner}: --encoder-opt heads={heads!r} must be a positive divisor of the attention "
                             f"pool's width {features} (width x 32); leave it out for {features // 64}")
        from bench.clip.modified_resnet import STEMS, ModifiedResNet  # heavy import only when the encoder is built

        step = STEMS[stem]
        if image_size % step:
            other = ", or modified_resnet_cifar (multiples of 8)" if stem == "openai" else ""
            raise BenchError(f"{owner} downsamples {step}x, so --image-size {image_size} must be a multiple of {step}; "
                             f"use {step * max(1, round(image_size / step))}{other}")

        return ModifiedResNet(layers=layers, output_dim=embed_dim, heads=heads, input_resolution=image_size,
                              width=width, stem=stem)

    return factory


@hookimpl
def register_encoders(register):
    register("modified_resnet", _modified_resnet("openai"),
             "OpenAI CLIP ModifiedResNet, layers (2,2,2,2), width 32: 3-conv stem, anti-aliased strides, "
             "attention pool (the reference; at 32 px it pools a 1x1 map)",
             family="resnet", source="bench (OpenAI CLIP)", params=7_174_960)
    register("modified_resnet_cifar", _modified_resnet("cifar"),
             "ModifiedResNet with a full-resolution stem for 32 px (stride-1 first conv, no stem pool): "
             "8x downsampling, attention pool over a 4x4 map",
             family="resnet", source="bench", params=7_190_320)

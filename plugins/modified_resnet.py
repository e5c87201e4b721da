"""The reference vision tower, OpenAI's ModifiedResNet, and bench's 32 px variant."""
from bench import hookimpl


def _modified_resnet(stem):
    def factory(embed_dim, image_size, layers=(2, 2, 2, 2), width=32, heads=None):
        from bench.modified_resnet import ModifiedResNet  # heavy import only when the encoder is built

        return ModifiedResNet(layers=tuple(layers), output_dim=embed_dim, heads=heads or width * 32 // 64,
                              input_resolution=image_size, width=width, stem=stem)

    return factory


@hookimpl
def register_encoders(register):
    register("modified_resnet", _modified_resnet("openai"),
             "OpenAI CLIP ModifiedResNet, layers (2,2,2,2), width 32: 3-conv stem, anti-aliased strides, "
             "attention pool (the reference; at 32 px it pools a 1x1 map)",
             family="resnet", source="bench (OpenAI CLIP)")
    register("modified_resnet_cifar", _modified_resnet("cifar"),
             "ModifiedResNet with a full-resolution stem for 32 px (stride-1 first conv, no stem pool): "
             "8x downsampling, attention pool over a 4x4 map",
             family="resnet", source="bench")

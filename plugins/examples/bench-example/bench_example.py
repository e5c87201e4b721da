"""An example bench plugin: one encoder, one tokenizer and one template set, in one file.

Install it (``pip install -e plugins/examples/bench-example``) and bench finds it through its entry point;
or drop this file into a folder and pass ``--plugins-dir FOLDER``; or put it on ``sys.path`` and pass
``-p bench_example``. Then: ``bench run --encoder example/convnet --tokenizer example/bytes
--templates example/short``.
"""
import torch
from torch import nn

import bench

__version__ = "0.1.0"


class ConvNet(nn.Module):
    """Three conv-BN-ReLU stages (32 -> 16 -> 8 px), global average pool, linear projection to ``embed_dim``."""

    def __init__(self, embed_dim, width=16):
        super().__init__()
        layers, channels = [], 3
        for i in range(3):
            out = width * 2 ** i
            layers += [nn.Conv2d(channels, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, x):
        return self.proj(self.features(x).mean(dim=(2, 3)))


def convnet(embed_dim, image_size, width=16):
    # image_size is unused: global average pooling accepts any input size.
    return ConvNet(embed_dim, width=width)


class ByteTokenizer:
    """Lower-cased UTF-8 bytes as ids 1..256; 0 pads, 257 starts and 258 ends a text.

    The end token has the largest id because CLIP reads a text's features at its ``argmax`` position.
    """

    vocab_size = 259
    sot_token_id = 257
    eot_token_id = 258

    def __init__(self, context_length=77):
        self.context_length = context_length

    def __call__(self, texts, context_length=None, truncate=False):
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        result = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + [b + 1 for b in text.lower().encode("utf-8")] + [self.eot_token_id]
            if len(ids) > length:
                if not truncate:
                    raise bench.BenchError(f"text {text[:30]!r} is {len(ids)} bytes, over the context of {length}")
                ids = ids[:length - 1] + [self.eot_token_id]
            result[row, :len(ids)] = torch.tensor(ids)
        return result


def byte_tokenizer(context_length, prompts=None):
    # prompts is unused: a byte vocabulary needs no fitting.
    return ByteTokenizer(context_length)


@bench.hookimpl
def register_encoders(register):
    register("example/convnet", convnet, "a 3-stage ConvNet with average pooling (example plugin)",
             family="convnet", source="bench-example")


@bench.hookimpl
def register_tokenizers(register):
    register("example/bytes", byte_tokenizer, "UTF-8 bytes, vocab 259 (example plugin)")


@bench.hookimpl
def register_templates(register):
    register("example/short", lambda: ["a {}", "a photo of a {}", "{}"], "three short prompts (example plugin)")

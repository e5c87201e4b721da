"""The CLIP library: the model, its vision towers (ModifiedResNet, timm), the text Transformer, the tokenizer,
templates and the contrastive losses. Importable without any training code: imports the plugin host,
``bench.distributed`` (the loss's feature gather) and the base modules only.
"""

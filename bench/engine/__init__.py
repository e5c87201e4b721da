"""The training engine: built once from a recipe (``recipe``, ``build``), the CLIP step (``train_step``) and its
CUDA graph, an epoch of steps (``epoch_loop``), the compact token embedding, optimizer and schedule, fp16 loss
scaling, DDP wrapping, determinism, checkpoints and faults, the prewarm, and the spec's reference loop. Imports
clip, data, distributed and results (checkpoint provenance), never the app layer; ``recipe`` is
torch-free, so the run configuration can build one.
"""

"""The training engine: the CLIP step, its CUDA graph, the compact token embedding, optimizer and schedule,
DDP wrapping, checkpoints and faults, and the spec's reference loop. Imports clip, data, distributed,
evaluation and results (checkpoint provenance), never the app layer.
"""

"""torch.distributed plumbing: the process group and device of a run (``world``) and the collectives the
loss and the metrics need (``collectives``). Imports only torch and the base modules, so the loss can use it.
"""

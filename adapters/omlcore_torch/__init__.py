"""omlcore's raw-PyTorch adapter: torch.optim optimizers and learning-rate schedulers for configs.

Its plugin, :mod:`omlcore_torch.plugin` (entry point ``torch``), registers them by name. Torch is a core
dependency, so everything here is always available.
"""

__all__: list[str] = []

"""omlcore's PyTorch Lightning adapter.

Its plugin, :mod:`omlcore_lightning.plugin` (entry point ``lightning``), registers Lightning callbacks and
loggers by name without importing Lightning; they need ``pip install "omlcore[lightning]"``.
"""

__all__: list[str] = []

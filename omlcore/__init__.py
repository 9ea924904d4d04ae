"""omlcore: metric learning for PyTorch, validated by retrieval.

Importing this package is cheap and has no side effects: plugins are discovered on first use of
:func:`omlcore.plugins.get_registry` (or the CLI), and no optional framework is imported here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

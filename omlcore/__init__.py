"""omlcore: metric learning for PyTorch, validated by retrieval.

Importing this package is cheap and has no side effects: plugins are discovered on first use of
:func:`omlcore.plugins.get_registry` (or the CLI), and no optional framework is imported here. Library messages go to
the ``omlcore.*`` loggers, quiet (a ``logging.NullHandler``) until the application shows them, as the CLI does.
"""

import logging

__version__ = "0.1.0"

# A library logs and the application decides what to show: quiet unless configured (the CLI prints its loggers).
logging.getLogger("omlcore").addHandler(logging.NullHandler())

__all__ = ["__version__"]

"""Retrieval post-processing: steps between the kNN results and the metrics / predictions.

Every postprocessor follows :class:`~omlcore.protocols.Postprocessor` (``process(results, context)``) and is
registered under kind ``postprocessor`` (``omlcore plugins --kind postprocessor``); configs name one, or a list
of them (a :class:`PostprocessorChain`).
"""

from omlcore.postprocessing.base import (
    PostprocessorChain,
    PostprocessorError,
    RetrievalContext,
    build_postprocessor,
    check_postprocessed,
    with_rows,
)

__all__ = [
    "PostprocessorChain",
    "PostprocessorError",
    "RetrievalContext",
    "build_postprocessor",
    "check_postprocessed",
    "with_rows",
]

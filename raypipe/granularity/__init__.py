"""Group a document's tokens into units (tokens, words, sentences, the document) and reduce each
unit's token activations to one vector.

Pure numpy/torch over one document at a time: the model actors call ``group_units`` and
``aggregate`` after a forward pass, and tests run them without Ray or a model.

``aggregate`` (torch) loads on first use: configs and the CLI import the kinds from here, and a
job's driver starts Ray ~1.2 s sooner on 2 cores when its first imports do not pull torch in.
"""

from raypipe.granularity.kinds import Aggregation, Granularity
from raypipe.granularity.sentences import split_sentences
from raypipe.granularity.units import (DocTokens, Units, concatenate_units,
                                       doc_tokens_from_encodings, group_units)

__all__ = [
    "Aggregation",
    "DocTokens",
    "Granularity",
    "Units",
    "aggregate",
    "concatenate_units",
    "doc_tokens_from_encodings",
    "group_units",
    "split_sentences",
]


def __getattr__(name: str):
    if name == "aggregate":
        from raypipe.granularity.aggregation import aggregate

        globals()["aggregate"] = aggregate
        return aggregate
    raise AttributeError(f"module 'raypipe.granularity' has no attribute {name!r}")

"""Group a document's tokens into units (tokens, words, sentences, the document) and reduce each
unit's token activations to one vector.

Pure numpy/torch over one document at a time: the model actors call ``group_units`` and
``aggregate`` after a forward pass, and tests run them without Ray or a model.
"""

from raypipe.granularity.aggregation import aggregate
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

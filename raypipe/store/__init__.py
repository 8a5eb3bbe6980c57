"""The activation store: Parquet shards of per-unit activation vectors plus a manifest.

Writers (model actors) call ``build_shard_table`` and ``write_shard``; the driver's
``StoreWriter`` lists finished shards in the manifest; ``ActivationStore`` reads them back.
The on-disk format is documented in ``raypipe.store.layout``.
"""
from raypipe.store.attributions import (ATTRIBUTION_FORMAT, AttributionStore,
                                        build_attribution_table)
from raypipe.store.layout import build_shard_table, decode_activations, encode_activations
from raypipe.store.manifest import StoreExistsError, StoreWriter
from raypipe.store.reader import ActivationStore
from raypipe.store.shard_writer import ShardRecord, write_shard

__all__ = ["ActivationStore", "AttributionStore", "ATTRIBUTION_FORMAT", "build_attribution_table", "StoreWriter", "StoreExistsError", "ShardRecord", "write_shard",
           "build_shard_table", "encode_activations", "decode_activations"]

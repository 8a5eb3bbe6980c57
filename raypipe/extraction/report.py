"""Human-readable summaries of a job and of a store (what `extract` and `inspect` print)."""
from __future__ import annotations

from raypipe.extraction.pipeline import ExtractResult


def print_summary(result: ExtractResult) -> None:
    r = result
    lines = [
        f"store          {r.store}",
        f"documents      {r.documents:,}  (skipped empty: {r.skipped_empty}, unreadable: {r.unreadable}, "
        f"truncated: {r.truncated}, windowed: {r.windowed}, non-UTF-8 decoded: {r.decode_fallbacks})",
        f"units (rows)   {r.units:,}" + (f"  ({r.no_units} documents gave no unit: only special "
                                            "tokens, e.g. zero-width or control characters)"
                                            if r.no_units else ""),
        f"tokens         {r.tokens:,}" + (f"  ({r.tokens - r.resumed_tokens:,} in this run)"
                                          if r.resumed_tokens else ""),
        f"shards         {r.shards_written} written, {r.shards_skipped} already complete",
        f"throughput     {r.tokens_per_second:,.0f} tokens/s end to end ({r.wall_seconds:.1f} s), "
        f"{r.model_tokens_per_second:,.0f} tokens/s in the model stage",
    ]
    if r.truncated:
        lines.append(f"note           {r.truncated} documents were longer than max_length and were "
                     "truncated; use --overflow window to keep every token")
    print("\n".join(lines))
    print(f"\nlook inside:   raypipe inspect {r.store}\n"
          f"in Python:     from raypipe import ActivationStore; "
          f"s = ActivationStore({r.store!r}); s.units(); s.to_numpy(s.split_points[0])")


def describe_store(path: str, rows: int = 5) -> str:
    from raypipe.store import ActivationStore

    store = ActivationStore(path)
    m = store.manifest
    summary = m.get("summary") or {}
    out = [
        f"store        {path}  ({m.get('status')}, format {m.get('format')})",
        f"model        {m.get('model')}  [{m.get('model_type')}]",
        f"split points {', '.join(store.split_points)}",
        f"granularity  {m.get('granularity')}  (aggregation {m.get('aggregation')})",
        f"dtype        compute {m.get('dtype')}, stored {m.get('store_dtype')}",
        f"rows         {len(store):,} in {len(m.get('shards', []))} shards "
        f"({sum(s.get('bytes', 0) for s in m.get('shards', [])) / 1e6:,.1f} MB)",
        f"corpus       {m.get('corpus', {}).get('kind')}: {m.get('corpus', {}).get('path', '')} "
        f"({m.get('documents')} documents)",
    ]
    if summary:
        out.append(f"job          {summary.get('documents', 0):,} documents, {summary.get('tokens', 0):,} "
                   f"tokens, {summary.get('truncated', 0)} truncated, "
                   f"{summary.get('skipped_empty', 0)} empty skipped")
    if rows and len(store):
        units = store.units().slice(0, rows).to_pylist()
        out.append("first units")
        for u in units:
            out.append(f"  doc {u['doc_id']} unit {u['unit']} [{u['char_start']}:{u['char_end']}] "
                       f"{u['text']!r}")
    return "\n".join(out)

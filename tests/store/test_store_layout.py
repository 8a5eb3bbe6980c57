"""Encoding activations to store bytes and back; the documented pyarrow-only recipe."""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raypipe.store import build_shard_table, decode_activations, encode_activations, write_shard
from raypipe.store import layout

from tests.store.store_factories import DIMS, SPLITS, make_units


def _torch_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Independent reference: torch's own float32 -> bfloat16 rounding, as uint16 bits."""
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def _hard_float32(rng) -> np.ndarray:
    """Random values plus rounding ties, subnormals, extremes and infinities."""
    x = rng.standard_normal((64, 16)).astype(np.float32)
    specials = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x00000001, 0x007FFFFF, 0x7F7FFFFF,
                         0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x80000000, 0x3F7FFFFF, 0x33800000,
                         0x3F808001, 0xBF808000, 0x00018000, 0x477FE000], dtype=np.uint32)
    x[0] = specials.view(np.float32)
    return x


def test_float32_and_float16_round_trip_against_numpy_casts():
    rng = np.random.default_rng(0)
    x = _hard_float32(rng)
    got32 = decode_activations(encode_activations(x, "float32"), "float32", 16)
    np.testing.assert_array_equal(got32, x)
    with np.errstate(over="ignore"):  # float32 max overflows float16 to inf, as it should
        want16 = x.astype(np.float16).astype(np.float32)
        got16 = decode_activations(encode_activations(x, "float16"), "float16", 16)
        col = encode_activations(x, "float16")
    np.testing.assert_array_equal(got16, want16)
    assert col.type == pa.binary(16 * 2) and len(col) == 64
    assert bytes(col[3].as_py()) == x[3].astype("<f2").tobytes()


def test_bfloat16_bits_equal_torch_for_numpy_and_tensor_inputs():
    rng = np.random.default_rng(1)
    x = _hard_float32(rng)
    want = _torch_bf16_bits(x)
    sources = (x, x.astype(">f4"), x.astype(np.float64), np.asfortranarray(x),
               torch.from_numpy(x), torch.from_numpy(x).to(torch.bfloat16))
    for source in sources:
        col = encode_activations(source, "bfloat16")
        bits = np.frombuffer(col.buffers()[1], dtype="<u2").reshape(64, 16)
        np.testing.assert_array_equal(bits, want)
    # decoding widens exactly: the float32 whose upper half is the stored bits
    widened = (want.astype(np.uint32) << 16).view(np.float32)
    col = encode_activations(x, "bfloat16")
    np.testing.assert_array_equal(decode_activations(col, "bfloat16", 16), widened)
    as64 = decode_activations(col, "bfloat16", 16, out_dtype=np.float64)
    np.testing.assert_array_equal(as64, widened.astype(np.float64))


def test_bfloat16_nan_stays_nan():
    x = np.array([[np.nan, -np.nan, 1.0]], dtype=np.float32)
    x[0, 1] = np.uint32(0xFFFFFFFF).view(np.float32)  # negative NaN with a full payload
    out = decode_activations(encode_activations(x, "bfloat16"), "bfloat16", 3)
    assert np.isnan(out[0, :2]).all() and out[0, 2] == 1.0


def test_tensor_inputs_any_float_dtype():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    t16 = torch.from_numpy(x).to(torch.float16).requires_grad_()
    got = decode_activations(encode_activations(t16, "float32"), "float32", 4)
    np.testing.assert_array_equal(got, t16.detach().float().numpy())
    got = decode_activations(encode_activations(torch.from_numpy(x), "float16"), "float16", 4,
                             out_dtype=np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, x.astype(np.float16))


def test_encoded_column_does_not_alias_the_input():
    x = np.ones((3, 4), np.float32)
    t = torch.ones(3, 4)
    col_x, col_t = encode_activations(x, "float32"), encode_activations(t, "float32")
    x[:] = 7.0
    t.fill_(7.0)
    assert (decode_activations(col_x, "float32", 4) == 1.0).all()
    assert (decode_activations(col_t, "float32", 4) == 1.0).all()


def test_decode_honours_chunks_and_offsets():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    col = encode_activations(x, "float16")
    chunked = pa.chunked_array([col.slice(2, 5), col.slice(9, 8)])
    want = np.concatenate([x[2:7], x[9:17]]).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(decode_activations(chunked, "float16", 6), want)
    assert decode_activations(col.slice(20), "float16", 6).shape == (0, 6)


def test_encode_decode_errors_name_the_value():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="float64x"):
        encode_activations(x, "float64x")
    with pytest.raises(ValueError, match=r"2-D"):
        encode_activations(np.zeros(4, np.float32), "float32")
    with pytest.raises(TypeError, match="int64"):
        encode_activations(np.zeros((2, 2), np.int64), "float32")
    with pytest.raises(ValueError, match=r"fixed_size_binary\[12\]"):
        decode_activations(encode_activations(x, "float16"), "float32", 3)


def test_build_shard_table_schema():
    rng = np.random.default_rng(4)
    table, acts = make_units(0, 4, rng, dtype="float16")
    assert table.column_names == ["doc_id", "unit", "text", "char_start", "char_end", *SPLITS]
    types = [table.schema.field(c).type for c in table.column_names[:5]]
    assert types == [pa.int64(), pa.int32(), pa.string(), pa.int64(), pa.int64()]
    for p in SPLITS:
        f = table.schema.field(p)
        assert f.type == pa.binary(DIMS[p] * 2)
        assert f.metadata == {b"raypipe.dtype": b"float16", b"raypipe.dim": str(DIMS[p]).encode()}
    str_table, _ = make_units(0, 4, rng, string_ids=True)
    assert str_table.schema.field("doc_id").type == pa.string()
    with pytest.raises(ValueError, match=r"expected \(3, d\)"):
        build_shard_table([0, 0, 1], [0, 1, 0], ["a", "b", "c"], [0, 1, 0], [1, 2, 1],
                          {"h": np.zeros((2, 4), np.float32)}, "float32")


def _recipe_lines() -> str:
    doc = layout.__doc__
    block = doc[doc.index("alone**"):]
    block = block[block.index("::") + 2:]
    lines = [ln[4:] for ln in block.splitlines() if ln.startswith("    ")]
    return "\n".join(lines)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_documented_pyarrow_numpy_recipe(tmp_path, dtype):
    """Run the recipe from layout.py's docstring verbatim on a written shard."""
    rng = np.random.default_rng(5)
    table, acts = make_units(0, 6, rng, dtype=dtype)
    rec = write_shard(str(tmp_path), 0, table, doc_start=0, doc_end=6)
    code = _recipe_lines()
    assert len(code.splitlines()) == 5 and "frombuffer" in code
    scope = {"path": str(tmp_path / rec.name), "name": SPLITS[1]}
    exec(code, scope)
    x = scope["x"]
    want = acts[SPLITS[1]]
    if dtype == "bfloat16":
        np.testing.assert_array_equal(x, _torch_bf16_bits(want))
        x = (x.astype(np.uint32) << 16).view(np.float32)  # the widening the docstring gives
        want = torch.from_numpy(want).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(x, want.astype(x.dtype))
    assert re.search(r"\(x\.astype\(np\.uint32\) << 16\)\.view\(np\.float32\)", layout.__doc__)
    # the file is plain Parquet: another reader sees the same rows
    assert pq.ParquetFile(scope["path"]).metadata.num_rows == table.num_rows

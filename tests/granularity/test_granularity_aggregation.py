import numpy as np
import pytest
import torch

from raypipe.granularity import Aggregation, Granularity, Units, aggregate, group_units
from raypipe.granularity.units import doc_tokens_from_encodings


def make_units(members):
    members = [np.asarray(m, dtype=np.int64) for m in members]
    n = len(members)
    return Units(members, [""] * n, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))


def brute_force(acts: np.ndarray, members, aggregation: Aggregation) -> np.ndarray:
    """Plain loops over units and dimensions."""
    out = np.empty((len(members), acts.shape[1]), dtype=np.float64)
    for u, m in enumerate(members):
        for j in range(acts.shape[1]):
            col = [float(acts[i, j]) for i in m]
            if aggregation is Aggregation.MEAN:
                out[u, j] = sum(col) / len(col)
            elif aggregation is Aggregation.SUM:
                out[u, j] = sum(col)
            elif aggregation is Aggregation.MAX:
                out[u, j] = max(col)
            elif aggregation is Aggregation.MIN:
                out[u, j] = min(col)
            else:
                best = col[0]
                for v in col[1:]:
                    if abs(v) > abs(best) or (abs(v) == abs(best) and v > best):
                        best = v
                out[u, j] = best
    return out


RANDOM_MEMBERS = [[0], [1, 2, 3], [5, 4], [6, 7, 8, 9, 10, 11], [3], [2, 9, 0], [11, 10]]


@pytest.mark.parametrize("aggregation", list(Aggregation))
def test_matches_brute_force(aggregation):
    torch.manual_seed(0)
    acts = torch.randn(12, 5, dtype=torch.float64)
    acts[1, 0], acts[2, 0] = 2.0, -2.0  # a signed_max tie
    out = aggregate(acts, make_units(RANDOM_MEMBERS), aggregation)
    assert out.shape == (len(RANDOM_MEMBERS), 5) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), brute_force(acts.numpy(), RANDOM_MEMBERS, aggregation), rtol=1e-12)


def test_signed_max_keeps_sign():
    acts = torch.tensor([[1.0, -5.0, 0.5], [-3.0, 2.0, -0.5]])
    out = aggregate(acts, make_units([[0, 1]]), Aggregation.SIGNED_MAX)
    assert out.tolist() == [[-3.0, -5.0, 0.5]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("aggregation", list(Aggregation))
def test_single_member_units_are_bit_identical(aggregation, dtype):
    torch.manual_seed(1)
    acts = (torch.randn(6, 7) * 100).to(dtype)
    acts[2, 3] = -0.0
    acts[4, 1] = float("-inf")
    members = [[2], [0, 1], [4], [5], [3, 1]]
    out = aggregate(acts, make_units(members), aggregation)
    assert out.dtype == dtype and out.device == acts.device
    for u, t in [(0, 2), (2, 4), (3, 5)]:
        assert torch.equal(out[u].view(torch.int16 if dtype != torch.float32 else torch.int32),
                           acts[t].view(torch.int16 if dtype != torch.float32 else torch.int32))


def test_half_precision_mean_accumulates_in_float32():
    acts = torch.full((2000, 2), 0.1, dtype=torch.float16)
    acts[:, 1] = 1000.0
    out = aggregate(acts, make_units([list(range(2000))]), Aggregation.MEAN)
    assert out.dtype == torch.float16
    assert out[0].tolist() == [acts[0, 0].item(), 1000.0]
    total = aggregate(acts[:, :1], make_units([list(range(2000))]), Aggregation.SUM)
    assert abs(total.item() - 2000 * acts[0, 0].item()) < 1.0  # fp16 running sum would stall at 256


def test_word_means_against_numpy_loop(minilm_tokenizer):
    text = "Photosynthesizing microorganisms are uncharacteristically small, e.g. bacteria."
    enc = minilm_tokenizer(text, return_offsets_mapping=True)
    doc = doc_tokens_from_encodings(text, enc.encodings, minilm_tokenizer)
    units = group_units(doc, Granularity.WORD)
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(len(doc), 16)).astype(np.float32)
    out = aggregate(torch.from_numpy(acts), units, Aggregation.MEAN).numpy()
    expected = []
    for word in sorted({w for w in enc.word_ids() if w is not None}):
        rows = [acts[i] for i, w in enumerate(enc.word_ids()) if w == word]
        expected.append(np.mean(rows, axis=0))
    np.testing.assert_allclose(out, np.array(expected), rtol=1e-5, atol=1e-6)


def test_empty_units_give_empty_output():
    out = aggregate(torch.randn(3, 4), make_units([]), Aggregation.MEAN)
    assert out.shape == (0, 4)


def test_bad_inputs_are_rejected():
    acts = torch.randn(3, 4)
    with pytest.raises(ValueError, match="3 activation rows"):
        aggregate(acts, make_units([[0, 3]]), Aggregation.MAX)
    with pytest.raises(ValueError, match="unit 1 has no member"):
        aggregate(acts, make_units([[0], []]), Aggregation.MAX)
    with pytest.raises(ValueError, match=r"\(t, d\)"):
        aggregate(acts[None], make_units([[0]]), Aggregation.MAX)
    with pytest.raises(ValueError, match="median"):
        aggregate(acts, make_units([[0]]), "median")

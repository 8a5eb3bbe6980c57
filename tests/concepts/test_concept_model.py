"""ConceptModel: every method encodes/decodes new rows and survives save/load bit-identically."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raypipe.concepts.batch_methods import fit_batch_method
from raypipe.concepts.concept_model import ConceptModel
from raypipe.concepts.methods import BATCH_METHODS, SAE_METHODS, check_method
from raypipe.concepts.overcomplete_import import import_overcomplete

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

DIM, K = 16, 4
FAST_PARAMS = {"nmf": {"max_iter": 100}, "semi_nmf": {"max_iter": 100},
               "convex_nmf": {"max_iter": 40}, "ica": {"max_iter": 100},
               "dictionary_learning": {"max_iter": 20}, "sparse_pca": {"max_iter": 20}}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny matrices on 2 shared cores: extra threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(n: int, seed: int) -> np.ndarray:
    """Non-negative rows, so every batch method (nmf included) can fit them."""
    return np.abs(np.random.default_rng(seed).normal(size=(n, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def batch_models() -> dict[str, ConceptModel]:
    x = _rows(120, seed=0)
    return {m: fit_batch_method(m, x, K, seed=0, **FAST_PARAMS.get(m, {})) for m in BATCH_METHODS}


@pytest.mark.parametrize("method", BATCH_METHODS)
def test_batch_method_encodes_decodes_and_round_trips(method, batch_models, tmp_path):
    model = batch_models[method]
    new = _rows(25, seed=1)
    codes = model.encode(new)
    assert isinstance(codes, np.ndarray) and codes.dtype == np.float32 and codes.shape == (25, K)
    rebuilt = model.decode(codes)
    assert isinstance(rebuilt, np.ndarray) and rebuilt.dtype == np.float32
    assert rebuilt.shape == (25, DIM)
    assert np.isfinite(codes).all() and np.isfinite(rebuilt).all()
    assert model.dictionary.shape == (K, DIM) and model.dictionary.dtype == torch.float32

    as_torch = model.encode(torch.from_numpy(new).double())      # torch in (any float) -> torch out
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_array_equal(as_torch.numpy(), codes)
    # a fit that did not reconstruct better than the mean would point at a broken codec
    assert model.meta["metrics"]["relative_error"] < 1.0

    model.save(tmp_path / method)
    assert {p.name for p in (tmp_path / method).iterdir()} == {"dictionary.safetensors",
                                                              "dictionary.json"}
    loaded = ConceptModel.load(tmp_path / method)
    assert loaded.method == method and loaded.meta == json.loads(json.dumps(model.meta))
    assert set(loaded.tensors) == set(model.tensors)
    for name, tensor in model.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor), name
    np.testing.assert_array_equal(loaded.encode(new), codes)
    np.testing.assert_array_equal(loaded.decode(codes), rebuilt)


def test_encode_passes_gradients_to_x_or_refuses_clearly(batch_models):
    x = torch.from_numpy(_rows(5, seed=2)).requires_grad_(True)
    pca = batch_models["pca"]
    pca.encode(x).sum().backward()
    # d/dx sum_k ((x - mean) @ D.T / scale)_k = sum_k D_k / scale_k, for every row
    by_hand = (pca.dictionary / pca.tensors["scale"][:, None]).sum(0).expand(5, DIM)
    torch.testing.assert_close(x.grad, by_hand)

    learned = batch_models["dictionary_learning"]
    with pytest.raises(ValueError, match="sparse_encode.*x.detach"):
        learned.encode(x)
    codes = learned.encode(x.detach())
    with torch.no_grad():
        np.testing.assert_array_equal(learned.encode(x).numpy(), codes.numpy())
    assert codes.shape == (5, K) and not codes.requires_grad


def test_load_names_the_missing_file(tmp_path, batch_models):
    with pytest.raises(FileNotFoundError, match="dictionary.json"):
        ConceptModel.load(tmp_path)
    batch_models["pca"].save(tmp_path / "m")
    (tmp_path / "m" / "dictionary.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="dictionary.safetensors"):
        ConceptModel.load(tmp_path / "m")


def test_wrong_shapes_name_the_expected_shape(batch_models):
    model = batch_models["pca"]
    with pytest.raises(ValueError, match=r"\(n, 16\)"):
        model.encode(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        model.encode(np.zeros(16, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        model.decode(np.zeros((3, 16), dtype=np.float32))


def test_meta_that_json_cannot_hold_is_named_on_save(batch_models, tmp_path):
    model = ConceptModel.from_tensors("pca", batch_models["pca"].tensors,
                                      {**batch_models["pca"].meta, "split_point": object()})
    with pytest.raises(ValueError, match="split_point"):
        model.save(tmp_path)


def test_missing_tensors_are_named():
    with pytest.raises(ValueError, match="mean"):
        ConceptModel.from_tensors("pca", {"dictionary": torch.zeros(2, 3), "scale": torch.ones(2)}, {})


def test_check_method_suggests_a_close_name():
    assert check_method("kmeans") == "kmeans"
    with pytest.raises(ValueError, match="did you mean 'topk_sae'") as err:
        check_method("TopK_SAE")
    assert "dictionary_learning" in str(err.value)


# ---- sparse autoencoders -----------------------------------------------------------------------
SAE_KWARGS = {
    "relu_sae": {"input_shape": DIM, "nb_concepts": 32},
    "topk_sae": {"input_shape": DIM, "nb_concepts": 32, "top_k": 4},
    "batchtopk_sae": {"input_shape": DIM, "nb_concepts": 32, "top_k": 4},
    "jumprelu_sae": {"input_shape": DIM, "nb_concepts": 32},
    "mp_sae": {"input_shape": DIM, "nb_concepts": 32, "k": 3},
}
SAE_CLASSES = {"relu_sae": "SAE", "topk_sae": "TopKSAE", "batchtopk_sae": "BatchTopKSAE",
               "jumprelu_sae": "JumpSAE", "mp_sae": "MpSAE"}


def _fresh_sae(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    sae = getattr(import_overcomplete("sae"), SAE_CLASSES[method])(**SAE_KWARGS[method])
    if method == "batchtopk_sae":
        sae(torch.randn(64, DIM))   # one train-mode pass sets the running threshold it infers with
    return sae


@pytest.mark.parametrize("method", SAE_METHODS)
def test_sae_round_trip_gives_identical_encode_decode(method, tmp_path):
    sae = _fresh_sae(method)
    x = torch.randn(20, DIM, generator=torch.Generator().manual_seed(1))
    model = ConceptModel.from_sae(method, sae, SAE_KWARGS[method], {"split_point": "layer.3"})

    sae.eval()   # the SAE's own inference path is the reference
    with torch.no_grad():
        _, ref_codes = sae.encode(x)
        ref_rebuilt = sae.decode(ref_codes)
    codes = model.encode(x)
    assert codes.shape == (20, 32)
    torch.testing.assert_close(codes, ref_codes, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.decode(codes), ref_rebuilt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.dictionary, sae.get_dictionary().detach(), rtol=1e-6, atol=1e-7)
    if method in ("topk_sae", "mp_sae"):
        budget = SAE_KWARGS[method].get("top_k", SAE_KWARGS[method].get("k"))
        assert ((codes != 0).sum(1) <= budget).all()

    model.save(tmp_path)
    loaded = ConceptModel.load(tmp_path)
    assert loaded.meta["sae_kwargs"] == SAE_KWARGS[method] and loaded.meta["split_point"] == "layer.3"
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), model.decode(codes))
    assert torch.equal(loaded.dictionary, model.dictionary)
    np.testing.assert_array_equal(loaded.encode(x.numpy()), codes.numpy())


def test_sae_decode_passes_gradients_when_asked():
    model = ConceptModel.from_sae("topk_sae", _fresh_sae("topk_sae"), SAE_KWARGS["topk_sae"], {})
    codes = torch.rand(3, 32, requires_grad=True)
    model.decode(codes).sum().backward()
    torch.testing.assert_close(codes.grad, model.dictionary.sum(1).expand(3, 32))
    assert not model.encode(torch.randn(2, DIM)).requires_grad


def test_loading_an_sae_leaves_the_global_rng_alone(tmp_path):
    ConceptModel.from_sae("topk_sae", _fresh_sae("topk_sae"), SAE_KWARGS["topk_sae"], {}).save(tmp_path)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    ConceptModel.load(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_from_sae_refuses_what_it_cannot_rebuild():
    topk = _fresh_sae("topk_sae")
    with pytest.raises(ValueError, match="TopKSAE"):
        ConceptModel.from_sae("relu_sae", topk, SAE_KWARGS["topk_sae"], {})
    untrained = getattr(import_overcomplete("sae"), "BatchTopKSAE")(**SAE_KWARGS["batchtopk_sae"])
    with pytest.raises(ValueError, match="running_threshold"):
        ConceptModel.from_sae("batchtopk_sae", untrained, SAE_KWARGS["batchtopk_sae"], {})
    with pytest.raises(ValueError, match="encoder_module"):
        ConceptModel.from_sae("topk_sae", topk,
                              {**SAE_KWARGS["topk_sae"], "encoder_module": torch.nn.Identity()}, {})
    with pytest.raises(ValueError, match="fit_batch_method"):
        ConceptModel.from_sae("nmf", topk, {}, {})

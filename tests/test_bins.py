"""bttf.models.bins: the 313-bin table, soft encoding, prior, rebalancing and the annealed mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import ConvexHull

from bttf.errors import BadInputError
from bttf.models.bins import (
    AB_BINS,
    AB_BINS_NP,
    Q,
    annealed_mean,
    encode_nearest,
    estimate_prior,
    load_reference_prior,
    rebalance_weights,
    smooth_prior,
    soft_encode,
    soft_encode_topk,
)

ZERO_BIN = 120  # index of (0, 0)
HULL = ConvexHull(AB_BINS_NP.astype(np.float64))


def _brute_soft(ab: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """Reference soft encoding in float64: (N,2,H,W) -> (N,313,H,W)."""
    x = ab.transpose(0, 2, 3, 1)[..., None, :]  # N,H,W,1,2
    d2 = ((x - AB_BINS_NP.astype(np.float64)) ** 2).sum(-1)  # N,H,W,Q
    order = np.argsort(d2, axis=-1, kind="stable")[..., :k]
    dk = np.take_along_axis(d2, order, -1)
    w = np.exp(-(dk - dk[..., :1]) / (2 * sigma**2))
    w /= w.sum(-1, keepdims=True)
    out = np.zeros(d2.shape)
    np.put_along_axis(out, order, w, -1)
    return out.transpose(0, 3, 1, 2)


# --- the table -------------------------------------------------------------------------------


def test_table_shape_and_order() -> None:
    assert Q == 313 and AB_BINS.shape == (313, 2) and AB_BINS.dtype == torch.float32
    assert np.array_equal(AB_BINS.numpy(), AB_BINS_NP)
    keys = [tuple(r) for r in AB_BINS_NP.tolist()]
    assert keys == sorted(keys) and len(set(keys)) == Q
    assert np.all(AB_BINS_NP % 10 == 0)
    assert tuple(AB_BINS_NP[ZERO_BIN]) == (0, 0)


def test_table_matches_zhang(shared_dir) -> None:
    ref = np.load(shared_dir / "reference" / "zhang" / "pts_in_hull.npy")
    assert ref.shape == (313, 2)
    assert np.array_equal(AB_BINS_NP, ref.astype(np.float32))


# --- encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 10])
def test_soft_encode_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    ab = rng.uniform(-120, 120, size=(2, 2, 5, 4))
    ours = soft_encode(torch.from_numpy(ab).float(), k=k)
    assert ours.shape == (2, Q, 5, 4) and ours.dtype == torch.float32
    assert torch.allclose(ours.sum(1), torch.ones(2, 5, 4), atol=1e-5)
    assert ((ours > 0).sum(1) == k).all()
    np.testing.assert_allclose(ours.double().numpy(), _brute_soft(ab, k, 5.0), atol=1e-4)


def test_soft_encode_at_a_bin_centre() -> None:
    ab = torch.zeros(1, 2, 1, 1)  # (0, 0): 4 neighbours at distance 10
    enc = soft_encode(ab, k=5, sigma=5.0)[0, :, 0, 0]
    expected = 1 / (1 + 4 * np.exp(-2))
    assert abs(enc[ZERO_BIN].item() - expected) < 1e-5
    assert enc.argmax().item() == ZERO_BIN


def test_soft_encode_chunked_equals_unchunked() -> None:
    ab = torch.rand(3, 2, 7, 9) * 200 - 100
    whole = soft_encode(ab)
    assert torch.equal(soft_encode(ab, chunk_elements=Q * 10), whole)  # 10 pixels per chunk


def test_soft_encode_far_out_of_gamut_and_half() -> None:
    ab = torch.tensor([300.0, -400.0]).view(1, 2, 1, 1)
    enc = soft_encode(ab)
    assert torch.isfinite(enc).all() and abs(enc.sum().item() - 1) < 1e-5
    half = soft_encode(torch.rand(1, 2, 3, 3).half() * 50)
    assert half.dtype == torch.float16


def test_soft_encode_topk_matches_dense() -> None:
    ab = torch.rand(2, 2, 4, 4) * 100 - 50
    idx, w = soft_encode_topk(ab, k=5)
    assert idx.shape == w.shape == (2, 5, 4, 4)
    assert torch.allclose(soft_encode(ab).gather(1, idx), w)


def test_encode_nearest() -> None:
    rng = np.random.default_rng(3)
    ab = rng.uniform(-110, 110, size=(2, 2, 6, 5))
    idx = encode_nearest(torch.from_numpy(ab).float())
    assert idx.shape == (2, 6, 5) and idx.dtype == torch.long
    ref = _brute_soft(ab, 1, 5.0).argmax(1)
    assert np.array_equal(idx.numpy(), ref)
    centres = torch.from_numpy(AB_BINS_NP.T.copy()).view(1, 2, 1, Q)
    assert torch.equal(encode_nearest(centres)[0, 0], torch.arange(Q))


def test_encode_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\)"):
        soft_encode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        encode_nearest(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError):
        soft_encode(torch.zeros(1, 2, 4, 4), k=0)


# --- prior and rebalancing -------------------------------------------------------------------


def test_smooth_prior_of_a_delta() -> None:
    delta = torch.zeros(Q, dtype=torch.float64)
    delta[ZERO_BIN] = 1
    p = smooth_prior(delta, sigma=5.0)
    assert abs(p.sum().item() - 1) < 1e-12 and p.argmax().item() == ZERO_BIN
    neighbour = int(np.flatnonzero((AB_BINS_NP == (10, 0)).all(1))[0])
    assert abs(p[neighbour].item() / p[ZERO_BIN].item() - np.exp(-2)) < 1e-9


def test_estimate_prior_counts_across_batches() -> None:
    ab1 = torch.zeros(2, 2, 4, 4)  # 32 pixels at (0, 0)
    ab2 = torch.full((1, 2, 2, 8), 0.0)
    ab2[:, 0] = 52  # 16 pixels nearest to (50, 0)
    p = estimate_prior([ab1, ab2])
    assert p.shape == (Q,) and p.dtype == torch.float32
    assert abs(p.sum().item() - 1) < 1e-5
    raw = torch.zeros(Q, dtype=torch.float64)
    raw[ZERO_BIN] = 32
    raw[int(np.flatnonzero((AB_BINS_NP == (50, 0)).all(1))[0])] = 16
    assert torch.allclose(p.double(), smooth_prior(raw), atol=1e-7)
    with pytest.raises(ValueError):
        estimate_prior([])


def test_rebalance_weights_on_zhang_prior(shared_dir) -> None:
    prior = np.load(shared_dir / "reference" / "zhang" / "prior_probs.npy")
    w = rebalance_weights(prior, lam=0.5)
    assert w.shape == (Q,) and w.dtype == torch.float32 and (w > 0).all()
    p = torch.from_numpy(prior / prior.sum())
    assert abs((p * w.double()).sum().item() - 1) < 1e-5
    assert w.argmin().item() == ZERO_BIN  # the most common colour weighs least
    assert w.argmax().item() == int(np.argmin(prior))  # the rarest weighs most
    assert w[ZERO_BIN] < 1 < w.max()
    assert torch.equal(
        load_reference_prior(shared_dir / "reference" / "zhang" / "prior_probs.npy"),
        torch.from_numpy(prior / prior.sum()).float(),
    )


def test_rebalance_weights_limits() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 1, Q)
    p /= p.sum()
    assert torch.allclose(rebalance_weights(p, lam=1.0), torch.ones(Q))
    w0 = rebalance_weights(p, lam=0.0).double().numpy()
    np.testing.assert_allclose(w0, 1 / (Q * p), rtol=1e-5)
    ws = rebalance_weights(p, smooth=True).double()
    assert abs((smooth_prior(torch.from_numpy(p)) * ws).sum().item() - 1) < 1e-5
    with pytest.raises(ValueError, match=r"\(312,\)"):
        rebalance_weights(np.ones(312))
    with pytest.raises(ValueError):
        rebalance_weights(np.ones(Q), lam=1.5)


def test_load_reference_prior_errors(tmp_path) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones(10))
    with pytest.raises(BadInputError, match="bad.npy"):
        load_reference_prior(bad)
    with pytest.raises(BadInputError, match="missing.npy"):
        load_reference_prior(tmp_path / "missing.npy")


# --- annealed mean ---------------------------------------------------------------------------

_logit_cases = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(1, 3),  # N
    st.integers(1, 3),  # H
    st.integers(1, 4),  # W
    st.floats(0.1, 20.0),  # logit scale
)


def _logits(case: tuple[int, int, int, int, float]) -> torch.Tensor:
    seed, n, h, w, scale = case
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, Q, h, w, generator=g) * scale


def _points(ab: torch.Tensor) -> np.ndarray:
    return ab.permute(0, 2, 3, 1).reshape(-1, 2).double().numpy()


def _mode_ab(logits: torch.Tensor) -> torch.Tensor:
    return AB_BINS[logits.argmax(1)].permute(0, 3, 1, 2)


def _clear_winner(logits: torch.Tensor, gap: float) -> torch.Tensor:
    top2 = logits.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) > gap  # (N, H, W)


@settings(max_examples=30, deadline=None)
@given(_logit_cases, st.floats(0.05, 3.0), st.one_of(st.none(), st.integers(1, Q)))
def test_annealed_mean_in_hull_and_shapes(case, temperature, top_k) -> None:
    logits = _logits(case)
    ab = annealed_mean(logits, temperature=temperature, top_k=top_k)
    n, _, h, w = logits.shape
    assert ab.shape == (n, 2, h, w) and ab.dtype == torch.float32
    pts = _points(ab)
    assert (HULL.equations[:, :2] @ pts.T + HULL.equations[:, 2:] <= 1e-3).all()


@settings(max_examples=30, deadline=None)
@given(_logit_cases)
def test_annealed_mean_t1_is_the_expectation(case) -> None:
    logits = _logits(case)
    p = torch.softmax(logits.double(), 1)
    expected = torch.einsum("nqhw,qc->nchw", p, AB_BINS.double())
    assert torch.allclose(annealed_mean(logits, temperature=1.0).double(), expected, atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(_logit_cases)
def test_annealed_mean_small_t_and_top1_are_the_mode(case) -> None:
    logits = _logits(case)
    mode = _mode_ab(logits)
    assert torch.equal(annealed_mean(logits, top_k=1), mode)
    clear = _clear_winner(logits, gap=0.01)[:, None].expand_as(mode)
    cold = annealed_mean(logits, temperature=1e-4)
    assert torch.allclose(cold[clear], mode[clear], atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(_logit_cases, st.floats(-50, 50), st.one_of(st.none(), st.integers(1, 20)))
def test_annealed_mean_shift_invariant(case, shift, top_k) -> None:
    logits = _logits(case)
    per_pixel = torch.linspace(-1, 1, logits[:, :1].numel()).view_as(logits[:, :1]) * shift
    a = annealed_mean(logits, top_k=top_k)
    b = annealed_mean(logits + per_pixel, top_k=top_k)
    assert torch.allclose(a, b, atol=2e-2)


@settings(max_examples=20, deadline=None)
@given(_logit_cases, st.integers(1, Q), st.floats(0.1, 2.0))
def test_annealed_mean_top_k_matches_reference(case, k, temperature) -> None:
    logits = _logits(case)
    x = logits.double().permute(0, 2, 3, 1).reshape(-1, Q).numpy()
    expected = []
    for row in x:
        keep = np.argsort(-row, kind="stable")[:k]
        p = np.exp(row[keep] - row[keep].max())
        p /= p.sum()  # renormalised top-k probabilities
        pt = np.exp(np.log(p) / temperature)
        pt /= pt.sum()
        expected.append(pt @ AB_BINS_NP[keep].astype(np.float64))
    ours = _points(annealed_mean(logits, temperature=temperature, top_k=k))
    np.testing.assert_allclose(ours, np.array(expected), atol=1e-3)


def test_annealed_mean_top_k_all_equals_none() -> None:
    logits = torch.randn(2, Q, 3, 3) * 3
    assert torch.allclose(annealed_mean(logits, top_k=Q), annealed_mean(logits), atol=1e-4)


@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("chunk", [Q * 5 * 6 * 2, Q * 6 * 2])  # by images, by rows
def test_annealed_mean_chunked_equals_whole(top_k, chunk) -> None:
    logits = torch.randn(4, Q, 5, 6) * 4
    whole = annealed_mean(logits, top_k=top_k)
    assert torch.allclose(
        annealed_mean(logits, top_k=top_k, chunk_elements=chunk), whole, atol=1e-5
    )


def test_chunk_elements_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_elements"):
            annealed_mean(torch.zeros(1, Q, 2, 2), chunk_elements=bad)
        with pytest.raises(ValueError, match="chunk_elements"):
            soft_encode(torch.zeros(1, 2, 2, 2), chunk_elements=bad)
    # fewer values than one row / one pixel: still one row / one pixel at a time
    logits = torch.randn(1, Q, 3, 4)
    assert torch.allclose(annealed_mean(logits, chunk_elements=1), annealed_mean(logits), atol=1e-5)
    ab = torch.rand(1, 2, 3, 4) * 100 - 50
    assert torch.equal(soft_encode(ab, chunk_elements=1), soft_encode(ab))


def test_annealed_mean_half() -> None:
    logits = torch.randn(1, Q, 4, 4) * 5
    out = annealed_mean(logits.half())
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), annealed_mean(logits.half().float()), atol=0.1)
    assert torch.isfinite(annealed_mean(logits.half(), temperature=1e-4)).all()


def test_annealed_mean_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(1, 312, 2, 2\)"):
        annealed_mean(torch.zeros(1, 312, 2, 2))
    with pytest.raises(ValueError, match="temperature"):
        annealed_mean(torch.zeros(1, Q, 2, 2), temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        annealed_mean(torch.zeros(1, Q, 2, 2), top_k=400)

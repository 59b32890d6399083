"""XMAS: Eq. 4's concatenated-head attention against a brute-force loop, the k-means settings of the paper and
the reference (1,000 clusters capped by the rows, 100 iterations), and the reference's dropping of clusters of
two or fewer members."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from selbench.models import tiny
from selbench.models.chat import IMAGE
from selbench.models.extract import FeatureEngine
from selbench.models.training import total_steps
from selbench.pool.manifest import examples
from selbench.selectors.base import ScoringContext
from selbench.selectors.xmas import (
    TEXT_ONLY,
    XmasConfig,
    XmasSelector,
    balanced_sample,
    checkpoint_steps,
    cluster_count,
    instability,
    kept_clusters,
    layer_attention,
    trajectory_clusters,
)


def test_instability_is_total_variation() -> None:
    t = np.array([[1.0, 2.0, 1.5], [0.0, 0.0, 0.0]])
    assert instability(t).tolist() == [1.5, 0.0]


def test_checkpoints_evenly_spaced_and_end_at_the_last_step() -> None:
    assert checkpoint_steps(70, 7) == [10, 20, 30, 40, 50, 60, 70]
    assert checkpoint_steps(10, 7)[-1] == 10 and len(checkpoint_steps(10, 7)) == 7


# ---------------------------------------------------------------- attention (Eq. 4)

def eq4_brute_force(layer, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """The paper's matrix for one layer, written out: Q = x W_q, K = x W_k with all heads side by side
    (D = their full width), then for each query row a softmax of Q_i·K_j / √D over the keys it may see."""
    attn = layer.self_attn
    h = layer.input_layernorm(x)  # what the attention module receives
    q = torch.nn.functional.linear(h, attn.q_proj.weight, attn.q_proj.bias)
    k = torch.nn.functional.linear(h, attn.k_proj.weight, attn.k_proj.bias)
    assert q.shape[-1] == k.shape[-1], "the tiny models have no grouped-query attention"
    B, T, D = q.shape
    out = torch.zeros(B, T, T)
    for b in range(B):
        for i in range(T):
            keys = [j for j in range(i + 1) if key_mask[b, j]]
            if not keys:
                continue
            logits = torch.stack([q[b, i] @ k[b, j] for j in keys]) / math.sqrt(D)
            out[b, i, keys] = torch.softmax(logits, dim=0)
    return out


@pytest.fixture(scope="module")
def proxy_batch(small_world, small_pool):
    """The world's proxy with sharper attention (q/k weights × 4: the tiny trained proxy attends almost
    uniformly, which would make every reading of the attention look alike), and a padded batch of image rows."""
    model, processor = tiny.load(small_world / "models" / "proxy", attn="eager")
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    eng = FeatureEngine(model, processor, model.config.image_seq_length, device="cpu", batch_size=8)
    rows = [int(i) for i in np.flatnonzero(small_pool.has_image.to_numpy())[:3]]
    batch = eng.collator(examples(small_pool, rows))
    assert (batch.attention_mask == 0).any(), "the batch must exercise the padding mask"
    return model, eng, batch


def test_concat_attention_is_eq4_for_every_layer(proxy_batch) -> None:
    model, eng, batch = proxy_batch
    layers = model.model.language_model.layers
    cap = eng.forward(batch, n_blocks=None, attention=layer_attention("concat", len(layers)))
    with torch.no_grad():
        hidden = model(**batch.model_inputs(), output_hidden_states=True).hidden_states  # [l] = input of layer l
        mask = batch.attention_mask.bool()
        for i, layer in enumerate(layers):
            ref = eq4_brute_force(layer, hidden[i], mask)
            for b in range(len(mask)):  # real query rows; every key column (masked ones must be 0)
                torch.testing.assert_close(cap.attention[i][b][mask[b]], ref[b][mask[b]], rtol=0, atol=1e-5)


def test_head_mean_is_a_different_matrix(proxy_batch) -> None:
    """The earlier reading (mean of per-head softmaxes with RoPE) must not pass for Eq. 4."""
    model, eng, batch = proxy_batch
    n = len(model.model.language_model.layers)
    concat = eng.forward(batch, n_blocks=None, attention=layer_attention("concat", n)).attention
    head_mean = eng.forward(batch, n_blocks=None, attention=layer_attention("head_mean", n)).attention
    mask = batch.attention_mask.bool()
    for i in range(n):
        for b in range(len(mask)):
            m = mask[b]
            a, h = concat[i][b][m][:, m], head_mean[i][b][m][:, m]
            torch.testing.assert_close(a.sum(-1), torch.ones(int(m.sum())))  # both are row-stochastic ...
            torch.testing.assert_close(h.sum(-1), torch.ones(int(m.sum())))
            assert (a - h).abs().max() > 1e-2  # ... but not the same matrix


def test_alignment_scores_use_eq4_by_default(small_world, small_pool, tmp_path) -> None:
    """The selector's trajectory step, default config: top-5 singular values of the Eq. 4 cross-modal block
    (text rows after the image × image columns) summed over layers, recomputed by brute force."""
    sel = XmasSelector(XmasConfig())
    assert sel.config.attention == "concat"
    proxy = small_world / "models" / "proxy"
    rows = [int(i) for i in np.flatnonzero(small_pool.has_image.to_numpy())[:2]]
    ctx = ScoringContext(work_dir=tmp_path, device="cpu", batch_size=2)
    traj = sel.alignment_trajectories([proxy], examples(small_pool, rows), ctx)

    model, processor = tiny.load(proxy)
    eng = FeatureEngine(model, processor, model.config.image_seq_length, device="cpu", batch_size=2)
    batch = eng.collator(examples(small_pool, rows))
    with torch.no_grad():
        hidden = model(**batch.model_inputs(), output_hidden_states=True).hidden_states
        layers = model.model.language_model.layers
        total = sum(eq4_brute_force(layer, hidden[i], batch.attention_mask.bool()) for i, layer in enumerate(layers))
    for b in range(len(rows)):
        img = torch.nonzero(batch.roles[b] == IMAGE).flatten()
        text = torch.nonzero((batch.roles[b] >= 0) & (torch.arange(batch.roles.shape[1]) > img.max())).flatten()
        expected = torch.linalg.svdvals(total[b][text][:, img].double())[:5].sum().item()
        assert traj[b, 0] == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- k-means and the clusters it keeps

def test_defaults_follow_the_paper_and_the_reference() -> None:
    cfg = XmasConfig()
    assert (cfg.attention, cfg.n_clusters, cfg.niter, cfg.min_cluster_size) == ("concat", 1000, 100, 3)
    # the reference's proxy fine-tune (XMAS/scripts/train/finetune.sh, train_stablelm.sh): full LLM + connector at 2e-5,
    # frozen vision tower, one epoch, warm-up 0.03, 2,048 tokens, global batch 32 (4 GPUs × 8 there, 8 × 4 here)
    pt = cfg.proxy_training
    assert (pt.method, pt.lr, pt.projector_lr, pt.epochs, pt.warmup_ratio, pt.freeze_vision, pt.max_length) == (
        "full", 2e-5, None, 1.0, 0.03, True, 2048)
    assert pt.batch_size * pt.grad_accum == 32
    assert total_steps(665_298, pt)[1] == math.ceil(665_298 / 32)  # optimiser steps: those of global batch 32
    assert XmasSelector.revision == 2
    assert XmasConfig(n_clusters="scaled").n_clusters == "scaled"
    with pytest.raises(ValidationError):
        XmasConfig(n_clusters=0)
    with pytest.raises(ValidationError):
        XmasConfig(attention="mean")


def test_cluster_count_is_1000_capped_by_the_rows() -> None:
    assert cluster_count(1000, 624_610) == 1000  # LLaVA-665K's image rows: the paper's 1,000
    assert cluster_count(1000, 186_000) == 1000  # Vision-Flan too: no scaling with N unless asked
    assert cluster_count(1000, 300) == 300  # a small pool: never more clusters than rows
    assert cluster_count(4, 300) == 4
    assert cluster_count("scaled", 665_298) == 1000 and cluster_count("scaled", 10_000) == 15
    assert cluster_count("scaled", 100) == 2


def test_kmeans_is_seeded_and_1000_clusters_on_a_small_pool_are_singletons() -> None:
    traj = np.random.default_rng(0).normal(size=(60, 3))
    k = cluster_count(XmasConfig().n_clusters, len(traj))
    labels = trajectory_clusters(traj, k, niter=100, seed=0)
    assert k == 60 and len(np.unique(labels)) == 60  # every row alone: all dropped by min_cluster_size 3
    assert not kept_clusters(labels, 3).any()
    few = trajectory_clusters(traj, 4, niter=100, seed=5)
    assert few.tolist() == trajectory_clusters(traj, 4, niter=100, seed=5).tolist()


def test_balanced_sampling_keeps_balance_and_carries_shortfall() -> None:
    # clusters of sizes 3, 10, 10 and a text-only cluster of 4; budget 16 → shares 4 each
    labels = np.array([0] * 3 + [1] * 10 + [2] * 10 + [TEXT_ONLY] * 4)
    instab = np.concatenate([np.arange(3.0), np.arange(10.0)[::-1], np.arange(10.0), [np.nan] * 4])
    picks = balanced_sample(labels, instab, 16, seed=0)
    assert len(picks) == len(set(picks.tolist())) == 16
    per = {c: int((labels[picks] == c).sum()) for c in (0, 1, 2, TEXT_ONLY)}
    # ascending size: cluster 0 (3) gives 3 of its 4 → the 1 left carries to the rest: 13 over 3 → 4, 4, 5
    assert per == {0: 3, TEXT_ONLY: 4, 1: 4, 2: 5}
    # within a cluster the most stable (lowest instability) are taken
    c1 = picks[labels[picks] == 1]
    assert sorted(instab[c1].tolist()) == [0.0, 1.0, 2.0, 3.0]
    assert balanced_sample(labels, instab, 16, seed=0).tolist() == picks.tolist()


def test_clusters_of_two_or_fewer_are_dropped_as_the_reference_does() -> None:
    # clusters 0 (2 rows) and 1 (1 row) are too small; so is a text-only cluster of 2
    labels = np.array([0, 0, 1] + [2] * 5 + [3] * 5 + [TEXT_ONLY] * 2)
    instab = np.array([0.0, 0.1, 0.2] + [1.0, 2.0, 3.0, 4.0, 5.0] * 2 + [np.nan] * 2)
    dropped = np.flatnonzero(np.isin(labels, [0, 1, TEXT_ONLY]))
    assert kept_clusters(labels, 3).tolist() == [False] * 3 + [True] * 10 + [False] * 2
    # the small clusters hold the most stable rows, yet Alg. 1 never picks them
    picks = balanced_sample(labels, instab, 8, seed=0)
    assert not set(picks.tolist()) & set(dropped.tolist())
    assert sorted(labels[picks].tolist()) == [2] * 4 + [3] * 4
    # only when the kept clusters run out (the reference would return fewer) are dropped rows used, most
    # stable first, text-only rows last
    picks = balanced_sample(labels, instab, 12, seed=0)
    assert len(picks) == 12 and sorted(picks[10:].tolist()) == [0, 1]
    assert sorted(balanced_sample(labels, instab, 15, seed=3).tolist()) == list(range(15))
    # min_cluster_size 1 keeps every cluster (the earlier behaviour)
    assert set(balanced_sample(labels, instab, 8, seed=0, min_cluster_size=1).tolist()) & set(dropped.tolist())

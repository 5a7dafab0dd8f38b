r"""Layer analysis of a CNN: class modularity of each block's outputs, linear CKA and graph-based
similarity (GBS) between layers, and the transformation complexity of its ReLU layers.

All functions take features ``[N, D]`` of the same ``N`` images (flattened feature maps) and run on
one batch of test images (:func:`analyse`).

**Modularity** (Lu et al., "Understanding the dynamics of DNNs using graph modularity", ECCV'22;
reference code ``yaolu-zjut/Dynamic-Graphs-Construction``): each image links to its ``k`` most
cosine-similar other images with the similarity as weight (a directed k-NN graph, self-similarity
excluded), the graph is symmetrised as :math:`A = (D + D^\top) / 2`, and Newman's weighted modularity
of the partition into true classes is

.. math:: Q = \frac{1}{2m} \sum_{ij} \Big(A_{ij} - \frac{k_i k_j}{2m}\Big) \delta(y_i, y_j),
   \qquad k_i = \sum_j A_{ij},\; 2m = \sum_i k_i.

**Linear CKA** (Kornblith et al. 2019): with column-centred :math:`X, Y`,
:math:`\mathrm{CKA} = \lVert Y^\top X \rVert_F^2 / (\lVert X^\top X \rVert_F \lVert Y^\top Y \rVert_F)`.

**GBS** (Chen et al., "Graph-based similarity of neural network representations", arXiv 2111.11165): each layer
is a graph on the images whose edge weights are the pairwise cosine similarities of their features;
two layers are compared by the centred alignment (HSIC normalised, as CKA) of their adjacency
matrices: :math:`\mathrm{GBS}(X, Y) = \langle H A_X H, H A_Y H\rangle_F / (\lVert H A_X H \rVert_F \lVert H A_Y H \rVert_F)`,
:math:`H = I - \tfrac{1}{N} \mathbf{1}\mathbf{1}^\top`. The paper builds a weighted graph whose nodes are
the images and whose edges are the similarities of their layer outputs, and compares layers' graphs;
choices made here: the complete weighted cosine graph with a zero diagonal (no k-NN
sparsification), compared by this HSIC-normalised alignment. Cosine similarity is unchanged
by an orthogonal transform and an isotropic scaling of the features, hence so is GBS.

**Transformation complexity** (Ren et al., ICML'22): the gating state of a ReLU layer for image
:math:`x` is the binary vector :math:`\sigma(x) = [z(x) > 0]` over all its units (channels x positions),
with :math:`z` the pre-activation. Estimators, over the :math:`N` analysed images with the empirical
distribution:

* ``entropy_bits``: plug-in joint entropy :math:`\hat H(\Sigma) = -\sum_s \hat p(s) \log_2 \hat p(s)`,
  :math:`\hat p(s)` the fraction of images whose state is :math:`s`. It is at most :math:`\log_2 N`
  (reported as ``entropy_ceiling_bits``): at that ceiling every image has its own state.
* ``input_information_bits``: :math:`\hat I(X; \Sigma) = \hat H(\Sigma) - \hat H(\Sigma | X) = \hat H(\Sigma)`,
  since the state is a deterministic function of the input.
* ``label_information_bits``: :math:`\hat I(\Sigma; Y) = \hat H(\Sigma) - \sum_y \hat p(y) \hat H(\Sigma | Y = y)`
  (equal to Ren et al.'s :math:`I(X; \Sigma; Y)` for a deterministic state).
* ``unit_entropy_bits``: the factorised estimate :math:`\sum_u h_2(\hat p_u)`, :math:`\hat p_u` the
  fraction of images in which unit :math:`u` is on, :math:`h_2` the binary entropy; an upper bound of
  the joint entropy that does not saturate at :math:`\log_2 N`; with ``unit_label_information_bits``
  :math:`\sum_u \hat I(\sigma_u; Y)` likewise.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .models.resnet_cifar import CifarResNet
from .models.rmnet_cifar import PlainCifarNet


#: Models :func:`block_outputs` reads (CIFAR ResNets and their plain nets).
ANALYSABLE = ("resnet20", "resnet56", "resnet110", "rmnet20", "rmnet56", "rmnet110")


def _cosine(features: Tensor, eps: float = 1e-8) -> Tensor:
    unit = features / features.norm(dim=1, keepdim=True).clamp_min(eps)
    return unit @ unit.T


def knn_graph(features: Tensor, k: int = 3) -> Tensor:
    """Symmetrised cosine k-NN adjacency ``[N, N]`` (ties to the lower index); see the module docstring.

    Args:
        features: ``[N, D]``; ``N > k``.
    """
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
    similarity = _cosine(features.double())
    similarity.fill_diagonal_(-math.inf)
    order = torch.sort(-similarity, dim=1, stable=True).indices[:, :k]
    directed = torch.zeros_like(similarity)
    directed.scatter_(1, order, similarity.gather(1, order))
    return (directed + directed.T) / 2


def modularity(adjacency: Tensor, labels: Tensor) -> float:
    """Newman's weighted modularity of the partition ``labels`` (``[N]`` ints) of ``adjacency`` ``[N, N]``."""
    adjacency = adjacency.double()
    degree = adjacency.sum(1)
    two_m = degree.sum()
    if two_m <= 0:
        raise ValueError("modularity of a graph without edges is undefined")
    classes = torch.unique(labels)
    q = 0.0
    for c in classes:
        members = labels == c
        q += float(adjacency[members][:, members].sum() / two_m - (degree[members].sum() / two_m) ** 2)
    return q


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``x [N, D1]`` and ``y [N, D2]`` (in [0, 1]; 1 for ``y = x``), through the
    ``[N, N]`` Gram matrices: :math:`\lVert Y^\top X \rVert_F^2 = \langle X X^\top, Y Y^\top \rangle_F`."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    gram_x, gram_y = x @ x.T, y @ y.T
    return float((gram_x * gram_y).sum() / (gram_x.norm() * gram_y.norm()))


def _centred(matrix: Tensor) -> Tensor:
    return matrix - matrix.mean(0, keepdim=True) - matrix.mean(1, keepdim=True) + matrix.mean()


def gbs(x: Tensor, y: Tensor) -> float:
    """Graph-based similarity of ``x [N, D1]`` and ``y [N, D2]``: centred alignment of their cosine graphs."""
    a, b = _cosine(x.double()), _cosine(y.double())
    a.fill_diagonal_(0)
    b.fill_diagonal_(0)
    a, b = _centred(a), _centred(b)
    return float((a * b).sum() / (a.norm() * b.norm()))


def similarity_matrix(features: Sequence[Tensor], measure) -> list[list[float]]:
    """``measure(features[i], features[j])`` for every pair (symmetric, computed once per pair)."""
    n = len(features)
    matrix = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            matrix[i][j] = matrix[j][i] = measure(features[i], features[j])
    return matrix


def _entropy_bits(counts: Tensor) -> float:
    p = counts[counts > 0].double() / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def _binary_entropy_bits(p: Tensor) -> Tensor:
    p = p.double()
    terms = torch.where((p > 0) & (p < 1), -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p)), torch.zeros_like(p))
    return terms


def _pattern_ids(states: Tensor) -> Tensor:
    """``[N]`` ids, equal for equal rows of the bool ``states [N, U]`` (numbered by first appearance)."""
    packed = np.packbits(states.cpu().numpy(), axis=1)
    ids: dict[bytes, int] = {}
    return torch.tensor([ids.setdefault(row.tobytes(), len(ids)) for row in packed], dtype=torch.long)


def gating_complexity(states: Tensor, labels: Tensor) -> dict[str, float]:
    """Transformation-complexity estimates of one ReLU layer (see the module docstring).

    Args:
        states: bool ``[N, U]``, unit ``u`` on (pre-activation > 0) for image ``n``.
        labels: ``[N]`` class labels.
    """
    n = states.shape[0]
    pattern = _pattern_ids(states)
    pattern_counts = torch.bincount(pattern)
    joint = _entropy_bits(pattern_counts)
    conditional = 0.0
    unit_on = states.double().mean(0)
    unit_entropy = _binary_entropy_bits(unit_on)
    unit_conditional = torch.zeros_like(unit_entropy)
    for c in torch.unique(labels):
        members = labels == c
        weight = float(members.sum()) / n
        conditional += weight * _entropy_bits(torch.bincount(pattern[members]))
        unit_conditional += weight * _binary_entropy_bits(states[members].double().mean(0))
    return {"entropy_bits": joint, "entropy_ceiling_bits": math.log2(n), "input_information_bits": joint,
            "label_information_bits": joint - conditional, "unit_entropy_bits": float(unit_entropy.sum()),
            "unit_label_information_bits": float((unit_entropy - unit_conditional).sum()), "units": states.shape[1]}


def block_outputs(model: nn.Module, images: Tensor) -> tuple[list[str], list[Tensor], list[str], list[Tensor]]:
    """Features and ReLU gating states of a CIFAR ResNet or plain net on ``images`` (eval mode).

    Returns:
        ``(names, features, relu_names, states)``: the stem's and every block's output ``[N, D]``
        (``stem``, ``block1`` ...), and the gating states ``[N, U]`` of every ReLU layer: the stem,
        each block's inner ReLU (``blockI.inner``) and its output ReLU (``blockI.out``).
    """
    if not isinstance(model, (CifarResNet, PlainCifarNet)):
        raise TypeError(f"layer analysis supports CIFAR ResNets and their plain nets, got {type(model).__name__}")
    captured: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs, output: Tensor) -> None:
            captured[name] = output.detach().flatten(1)
        return hook

    hooks = [(model.bn1, "stem.pre")]
    for i, block in enumerate(model.layers, start=1):
        hooks += [(block.bn1, f"block{i}.inner.pre"), (block, f"block{i}")]
    handles = [module.register_forward_hook(keep(name)) for module, name in hooks]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    names = ["stem"] + [f"block{i}" for i in range(1, len(model.layers) + 1)]
    features = [torch.relu(captured["stem.pre"])] + [captured[name] for name in names[1:]]
    relu_names, states = ["stem"], [captured["stem.pre"] > 0]
    for i in range(1, len(model.layers) + 1):
        relu_names += [f"block{i}.inner", f"block{i}.out"]
        states += [captured[f"block{i}.inner.pre"] > 0, captured[f"block{i}"] > 0]
    return names, features, relu_names, states


def analyse(model: nn.Module, images: Tensor, labels: Tensor, k: int = 3) -> dict:
    """Modularity curve, CKA and GBS matrices between the stem and block outputs, and the gating
    complexity of every ReLU layer, on normalised ``images [N, C, H, W]`` with ``labels [N]``."""
    names, features, relu_names, states = block_outputs(model, images)
    return {
        "layers": names,
        "modularity": [modularity(knn_graph(f, k), labels) for f in features],
        "cka": similarity_matrix(features, linear_cka),
        "gbs": similarity_matrix(features, gbs),
        "complexity": [{"layer": name, **gating_complexity(s, labels)} for name, s in zip(relu_names, states)],
        "images": int(images.shape[0]), "k": k,
    }


def plot_analysis(report: dict, folder) -> None:
    """Write ``modularity.png`` (curve), ``cka.png`` and ``gbs.png`` (heat maps) and ``complexity.png``
    (gating entropy and label information per ReLU layer) into ``folder``."""
    import io
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gnnprune.io import atomic_write_bytes

    def save(fig, name: str) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(Path(folder) / name, buffer.getvalue())

    layers = report["layers"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(layers)), report["modularity"], marker="o")
    ax.set_xticks(range(len(layers)), layers, rotation=60, fontsize=7)
    ax.set_ylabel(f"class modularity Q (k={report['k']})")
    save(fig, "modularity.png")
    for key, title in (("cka", "linear CKA"), ("gbs", "GBS")):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        image = ax.imshow(report[key], vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
        ax.set_yticks(range(len(layers)), layers, fontsize=6)
        ax.set_title(f"{title} between layers ({report['images']} test images)")
        fig.colorbar(image)
        save(fig, f"{key}.png")
    rows = report["complexity"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = range(len(rows))
    ax.plot(xs, [r["entropy_bits"] for r in rows], marker="o", label="H(gating) plug-in")
    ax.plot(xs, [r["label_information_bits"] for r in rows], marker="s", label="I(gating; label) plug-in")
    ax.axhline(rows[0]["entropy_ceiling_bits"], color="grey", linestyle="--", label="log2 N")
    ax.set_xticks(list(xs), [r["layer"] for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("bits")
    ax.legend(fontsize=7)
    save(fig, "complexity.png")

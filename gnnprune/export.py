"""A pruned model as a compact artifact: narrow dense weights, kept features, the pruned graph.

:func:`compact` turns a masked model into an :class:`ExportedModel`, a plain ``nn.Module``
called as ``model(x, edge_index, edge_weight)`` like a PyTorch Geometric model:

* the feature gates are folded into the input weights and the model selects the kept
  feature columns of the full-width input itself, then multiplies by the kept rows only;
* hidden units that cannot change the output are removed from every weight they touch
  (the units of :meth:`~gnnprune.nn.GraphModel.hidden_units`, found dead by
  :mod:`gnnprune.unit_spaces`: whole units of a structured run, and in an unstructured run
  the units whose weights all died), so the remaining weights are dense and small;
* the graph operator is built from ``(edge_index, edge_weight)`` with the model's own
  normalisation and cached while the same tensors come back (as PyG's ``cached=True``).

:func:`export_run` writes one seed of a run folder as such an artifact (``architecture.json``,
``model.pt``, ``graph.pt``); :func:`load_exported` reads it back with ``weights_only=True``
and no training code; :func:`predict` scores it on a data set.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import __version__
from .copruning import FEATURES, CoPruner
from .data import GraphData
from .graph import DirectedEdges, MaskedGraph
from .io import atomic_torch_save, atomic_write_json, check_new_folder, safe_torch_load
from .methods import PruneMethod
from .metrics import get_evaluator
from .nn import GraphModel, build_model
from .unit_spaces import live_units, remove_units, set_tensor, unit_groups

FORMAT = "gnnprune-export"
VERSION = 1
EXPORT_FILES = ("architecture.json", "model.pt", "graph.pt")
TOLERANCE = 1e-4  # export refuses a model whose outputs differ more from the masked model's


class ExportError(ValueError):
    """An export folder is missing, corrupt or does not fit, or an export failed its check (one line)."""


class ExportedModel(nn.Module):
    """A pruned model for inference: ``logits = model(x, edge_index, edge_weight)``.

    Args:
        net: the model with its units removed (a :class:`~gnnprune.nn.GraphModel` at narrower widths).
        kept_features: ``[F_kept]`` sorted indices of the input columns it reads.
        num_features: width ``F`` of the full input.

    Shapes:
        x: ``[N, F]`` dense; edge_index: ``[2, E]`` directed (both directions of an undirected
        edge), no self-loops; edge_weight: ``[E]`` or ``None`` (all 1); output ``[N, C]``.
    """

    def __init__(self, net: GraphModel, kept_features: Tensor, num_features: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("kept_features", kept_features.long().clone())
        self.num_features = int(num_features)
        self.units: dict[str, dict[str, int]] = {}  # per unit group: total and kept units (informative)
        self._cached: tuple | None = None

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.num_features:
            raise ValueError(f"expected x of shape [N, {self.num_features}], got {list(x.shape)}")
        if self.kept_features.numel() < self.num_features:
            x = x.index_select(1, self.kept_features)
        return self.net(x, self.graph(edge_index, edge_weight, x.size(0)))

    def graph(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> MaskedGraph:
        """The operators' graph, rebuilt only when other tensors (or changed ones) come in."""
        key = (edge_index._version, None if edge_weight is None else edge_weight._version, num_nodes)
        cached = self._cached
        if cached is not None and cached[0] is edge_index and cached[1] is edge_weight and cached[2] == key:
            return cached[3]
        if edge_weight is not None and (edge_weight.dim() != 1 or edge_weight.numel() != edge_index.size(-1)):
            raise ValueError(f"expected one edge weight per column of edge_index ({edge_index.size(-1)}), "
                             f"got shape {list(edge_weight.shape)}")
        graph = MaskedGraph(DirectedEdges(edge_index, num_nodes),
                            None if edge_weight is None else edge_weight.detach().float())
        self._cached = (edge_index, edge_weight, key, graph)
        return graph

    def macs(self, num_nodes: int, num_columns: int, nonzero: bool = False) -> list[dict]:
        """Per-layer MACs of one forward pass on ``num_nodes`` nodes and ``num_columns`` directed edges.

        ``nonzero=False`` counts what runs (every entry of the narrow dense weights);
        ``nonzero=True`` only their non-zero entries (the run's own count).
        """
        sizes = {name: int(p.count_nonzero()) if nonzero else p.numel() for name, p in self.net.named_parameters()}
        return self.net.macs(num_nodes, num_columns // 2, sizes)


def compact(model: GraphModel, pruner: CoPruner) -> ExportedModel:
    """The masked ``model`` under ``pruner`` as an :class:`ExportedModel` (same outputs).

    Learned feature gates are folded into the input weights' rows; then the units
    :func:`~gnnprune.unit_spaces.live_units` finds dead are removed, input columns included.
    """
    net = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():
        gate = pruner.engine.mask(FEATURES).float()
        if pruner.feature_gate is not None:
            gate = gate * pruner.feature_gate.detach()
        for name in net.input_weight_names:
            weight = net.get_parameter(name)
            weight.mul_(gate.view(-1, *([1] * (weight.dim() - 1))))
    net.separate_units()
    groups = unit_groups(net)
    keep = live_units(net, groups)
    remove_units(net, groups, keep)
    exported = ExportedModel(net, keep[FEATURES].nonzero().view(-1), pruner.node_features.num_features).eval()
    exported.units = {name: {"total": group.size, "kept": int(keep[name].sum())} for name, group in groups.items()}
    return exported


def kept_graph(pruner: CoPruner) -> dict:
    """``{edge_index [2, 2E], edge_weight [2E], num_nodes}``: both directions of each kept edge, its weight (1 if not learned)."""
    keep = pruner.engine.mask("edges")
    kept = pruner.edge_set.edges[:, keep]
    weight = pruner.edge_weight()
    weight = torch.ones(kept.size(1)) if weight is None else weight.detach()[keep]
    return {"edge_index": torch.cat([kept, kept.flip(0)], dim=1).contiguous(), "edge_weight": weight.repeat(2).contiguous(),
            "num_nodes": pruner.edge_set.num_nodes}


@torch.no_grad()
def max_abs_difference(exported: ExportedModel, model: GraphModel, pruner: CoPruner, data: GraphData,
                       graph: dict) -> float:
    """Largest ``|exported - masked|`` over all logits on ``data``."""
    model.eval()
    masked = model(pruner.inputs(), pruner.graph())
    return float((exported(data.x, graph["edge_index"], graph["edge_weight"]) - masked).abs().max())


def dense_macs(model: GraphModel, num_nodes: int, num_edges: int) -> int:
    """MACs of the unpruned ``model`` on a graph with ``num_edges`` undirected edges."""
    layers = model.macs(num_nodes, num_edges, {name: p.numel() for name, p in model.named_parameters()})
    return _total(layers)


def _total(layers: list[dict]) -> int:
    return int(sum(layer["transform"] + layer["aggregation"] for layer in layers))


def export_run(run_dir: str | Path, out: str | Path, seed: int | None = None, *, data: GraphData | None = None,
               data_root: str | Path | None = None) -> dict:
    """Write one seed of a run folder as an export folder; returns its ``architecture.json``.

    ``out`` must not exist or be empty; the folder appears complete or not at all. The export
    is checked against the masked model on the run's data set (all nodes); a largest
    difference above ``1e-4`` is an :class:`ExportError`.

    Files: ``architecture.json`` (model, constructor arguments, kept sizes, MACs, source run,
    the check), ``model.pt`` (the :class:`ExportedModel`'s ``state_dict``, ``kept_features``
    included), ``graph.pt`` (``edge_index``, ``edge_weight``, ``num_nodes``: a
    ``torch_geometric.data.Data(**graph)`` as it is).

    Raises:
        RunFileError: from :func:`~gnnprune.runs.load_run`.
        OutputExistsError: ``out`` exists and is not empty.
        ExportError: the check failed.
    """
    from .runs import load_run

    out = check_new_folder(out)
    run = load_run(run_dir, seed, data=data, data_root=data_root)
    exported = compact(run.model, run.pruner)
    graph = kept_graph(run.pruner)
    difference = max_abs_difference(exported, run.model, run.pruner, run.data, graph)
    if not difference <= TOLERANCE:
        raise ExportError(f"exported {run.config.model.name} differs from the masked model by {difference:.3g} "
                          f"(> {TOLERANCE}); not written")
    m = run.config.model
    constructor = {"in_channels": run.data.num_features, "out_channels": run.data.num_classes,
                   "hidden_channels": m.hidden_channels, "num_layers": m.num_layers, "dropout": m.dropout,
                   "options": dict(m.options)}
    dense = run.metrics.get("macs", {}).get("dense") or dense_macs(run.model, run.data.num_nodes, run.data.edges.num_edges)
    architecture = describe(exported, m.name, constructor, graph, dense)
    architecture.update(
        task=run.data.task, metric=run.data.metric,
        source={"run": str(Path(run_dir).resolve()), "seed": run.seed, "method": PruneMethod(run.config.method).value,
                "dataset": run.config.dataset, "targets": vars(run.config.targets),
                "weight_granularity": str(getattr(run.config.weight_granularity, "value", run.config.weight_granularity)),
                "val": run.metrics.get("val"), "test": run.metrics.get("test"), "data": run.data.describe()},
        check={"max_abs_diff_vs_masked_model": difference, "nodes": graph["num_nodes"]})
    write_export(out, exported, graph, architecture)
    return architecture


def describe(exported: ExportedModel, model: str, constructor: dict, graph: dict, dense: int) -> dict:
    """The ``architecture.json`` entries :func:`load_exported` needs, plus kept sizes and MACs.

    Args:
        exported: from :func:`compact`.
        model: registered model name (see :data:`gnnprune.nn.MODELS`).
        constructor: arguments of :func:`~gnnprune.nn.build_model` that built the unpruned model
            (``in_channels``, ``out_channels``, ``hidden_channels``, ``num_layers``, ``dropout``, ``options``).
        graph: from :func:`kept_graph`.
        dense: MACs of the unpruned model on the whole graph (:func:`dense_macs`).
    """
    n, columns = int(graph["num_nodes"]), int(graph["edge_index"].size(1))
    macs = exported.macs(n, columns)
    return {
        "format": FORMAT, "version": VERSION, "gnnprune": __version__, "torch": torch.__version__,
        "model": model, "constructor": constructor,
        "num_features": exported.num_features, "num_classes": constructor["out_channels"],
        "kept_features": int(exported.kept_features.numel()),
        "units": exported.units,
        "tensors": {name: list(t.shape) for name, t in exported.state_dict().items()},
        "graph": {"num_nodes": n, "kept_undirected_edges": columns // 2, "edge_index_columns": columns},
        "macs": {"exported": _total(macs), "exported_nonzero": _total(exported.macs(n, columns, nonzero=True)),
                 "dense": int(dense), "ratio": _total(macs) / dense, "per_layer": macs},
    }


def write_export(out: Path, exported: ExportedModel, graph: dict, architecture: dict) -> None:
    """Write the three files into a temporary sibling folder, then rename it to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        atomic_torch_save(exported.state_dict(), staging / "model.pt")
        atomic_torch_save(graph, staging / "graph.pt")
        atomic_write_json(staging / "architecture.json", architecture)
        if out.exists():
            out.rmdir()  # empty (checked before); a non-empty one makes this fail rather than be replaced
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_architecture(folder: str | Path) -> dict:
    """``architecture.json`` of an export folder, checked for format and version."""
    path = Path(folder) / "architecture.json"
    try:
        architecture = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path} not found (not a gnnprune export folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT:
        raise ExportError(f"cannot load {path}: not a {FORMAT} file")
    if architecture.get("version") != VERSION:
        raise ExportError(f"cannot load {path}: version {architecture.get('version')!r}, this gnnprune reads {VERSION}")
    for key in ("model", "constructor", "num_features", "tensors"):
        if key not in architecture:
            raise ExportError(f"cannot load {path}: missing key '{key}'")
    return architecture


def load_exported(folder: str | Path) -> ExportedModel:
    """The :class:`ExportedModel` of an export folder, in eval mode.

    Builds the registered model from ``architecture.json``, swaps in the layers of
    :meth:`~gnnprune.nn.GraphModel.separate_units` and puts every tensor of ``model.pt`` (loaded with
    ``weights_only=True``) in place. A missing, unexpected or misshapen key is an
    :class:`ExportError` naming the file and the key.
    """
    folder = Path(folder)
    architecture = read_architecture(folder)
    c = architecture["constructor"]
    try:
        with torch.random.fork_rng(devices=[]):
            net = build_model(architecture["model"], c["in_channels"], c["out_channels"], c["hidden_channels"],
                              c["num_layers"], c["dropout"], **c["options"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"cannot build the model of {folder / 'architecture.json'}: {exc}") from None
    net.separate_units()
    exported = ExportedModel(net, torch.zeros(0, dtype=torch.long), architecture["num_features"])
    path = folder / "model.pt"
    state = _load_dict(path, "a state_dict")
    _check_keys(set(state), set(exported.state_dict()), path)
    shapes = architecture["tensors"]
    for name, tensor in state.items():
        if not torch.is_tensor(tensor) or list(tensor.shape) != shapes.get(name):
            got = list(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
            raise ExportError(f"cannot load {path}: key '{name}' is {got}, architecture.json says {shapes.get(name)}")
        module_name, _, attr = name.rpartition(".")
        set_tensor(exported.get_submodule(module_name), attr, tensor)
    kept = exported.kept_features
    if kept.numel() and (bool((kept.diff() <= 0).any()) or int(kept[0]) < 0 or int(kept[-1]) >= exported.num_features):
        raise ExportError(f"cannot load {path}: key 'kept_features' is not sorted distinct indices below "
                          f"{exported.num_features}")
    return exported.eval()


def load_export_graph(folder: str | Path) -> dict:
    """``graph.pt`` of an export folder: ``{edge_index [2, E], edge_weight [E], num_nodes}``."""
    path = Path(folder) / "graph.pt"
    graph = _load_dict(path, "a dict")
    _check_keys(set(graph), {"edge_index", "edge_weight", "num_nodes"}, path)
    edge_index, edge_weight = graph["edge_index"], graph["edge_weight"]
    if not torch.is_tensor(edge_index) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ExportError(f"cannot load {path}: key 'edge_index' is not a [2, E] tensor")
    if not torch.is_tensor(edge_weight) or edge_weight.shape != (edge_index.size(1),):
        raise ExportError(f"cannot load {path}: key 'edge_weight' is not one weight per column of edge_index")
    return graph


def _load_dict(path: Path, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` of a file that must hold a dict; errors name the file."""
    try:
        loaded = safe_torch_load(path)
    except (ValueError, FileNotFoundError) as exc:
        raise ExportError(str(exc) if isinstance(exc, ValueError) else f"{path} not found") from None
    if not isinstance(loaded, dict):
        raise ExportError(f"cannot load {path}: expected {what}, got {type(loaded).__name__}")
    return loaded


def _check_keys(found: set[str], expected: set[str], path: Path) -> None:
    for kind, keys in (("missing", sorted(expected - found)), ("unexpected", sorted(found - expected))):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise ExportError(f"cannot load {path}: {kind} key '{keys[0]}'{more}")


@dataclass
class Prediction:
    """Outputs of an exported model on a data set.

    Attributes:
        probabilities: ``[N, C]`` softmax (multi-class) or sigmoid (multi-label) of the logits.
        predicted: ``[N]`` arg-max class (multi-class; ``None`` for multi-label).
        test_score: the data set's metric on its test split (``None`` without test nodes).
        metric: that metric's name.
    """

    probabilities: Tensor
    predicted: Tensor | None
    test_score: float | None
    metric: str


@torch.no_grad()
def predict(folder: str | Path, data: GraphData, use_dataset_graph: bool = False) -> Prediction:
    """Run the export in ``folder`` on ``data``'s features.

    Args:
        folder: an export folder.
        data: the data set (its feature width must be the export's).
        use_dataset_graph: propagate over ``data``'s own (full) graph with unit edge weights
            instead of the export's pruned, weighted graph (whose node count must then be ``data``'s).
    """
    model = load_exported(folder)
    if data.num_features != model.num_features:
        raise ExportError(f"data set {data.name!r} has {data.num_features} features; the export in {folder} "
                          f"reads {model.num_features}")
    if use_dataset_graph:
        edge_index, edge_weight = data.edges.directed(), None
    else:
        graph = load_export_graph(folder)
        if int(graph["num_nodes"]) != data.num_nodes:
            raise ExportError(f"data set {data.name!r} has {data.num_nodes} nodes; the pruned graph in {folder} has "
                              f"{int(graph['num_nodes'])} (use the data set's own graph instead)")
        edge_index, edge_weight = graph["edge_index"], graph["edge_weight"]
    try:
        logits = model(data.x, edge_index, edge_weight)
    except ValueError as exc:
        raise ExportError(f"cannot run the export in {folder} on {data.name!r}: {exc}") from None
    multilabel = data.task == "multilabel"
    probabilities = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)
    test_score = get_evaluator(data.metric)(logits, data.y, data.test_mask) if bool(data.test_mask.any()) else None
    return Prediction(probabilities, None if multilabel else logits.argmax(-1), test_score, data.metric)


def write_predictions(prediction: Prediction, path: str | Path) -> None:
    """CSV: ``node``, ``predicted`` (multi-class), then one probability column per class (or task)."""
    import io

    import numpy as np

    from .io import atomic_write_text

    probabilities = prediction.probabilities.numpy()
    columns = [f"p{k}" for k in range(probabilities.shape[1])]
    node = np.arange(probabilities.shape[0]).reshape(-1, 1)
    buffer = io.StringIO()
    if prediction.predicted is None:
        buffer.write(",".join(["node", *columns]) + "\n")
        np.savetxt(buffer, np.hstack([node, probabilities]), delimiter=",", fmt=["%d"] + ["%.6f"] * len(columns))
    else:
        buffer.write(",".join(["node", "predicted", *columns]) + "\n")
        table = np.hstack([node, prediction.predicted.numpy().reshape(-1, 1), probabilities])
        np.savetxt(buffer, table, delimiter=",", fmt=["%d", "%d"] + ["%.6f"] * len(columns))
    atomic_write_text(path, buffer.getvalue())

"""Models and graphs of PyTorch Geometric, co-pruned by the same masks and methods.

A model of your own built from ``torch_geometric`` layers is called as
``module(x, edge_index, edge_weight)``. :class:`PyGModel` wraps it into a
:class:`~gnnprune.nn.GraphModel`, so that :class:`~gnnprune.copruning.CoPruner`, the methods
and the one training loop prune it as they prune this package's models:

* **edges**: the kept undirected edges are passed in both directions as ``edge_index`` (a
  dead edge is absent); the learned edge weights go in as ``edge_weight``, the same value for
  both directions. The probe pass passes every edge, dead ones at weight 0, which changes
  neither the sums nor the degrees of a ``gcn_norm`` layer, so their gradient scores them for
  regrowth. Every message-passing layer must take that ``edge_weight``; one that does not
  (PyG's ``GATConv``, ``SAGEConv``, ``GINConv``) rules edge pruning out, with one line naming it.
* **features**: ``x`` is the full ``[N, F]`` matrix with dead columns zero and live column
  ``f`` scaled by its gate :math:`g_f`; the input layer's weights of dead columns are dead
  too. The input layer is the one weight whose input size is ``F`` (``data.num_features``);
  when there is none or several, name it with ``input_layer``.
* **weights**: the weights of every ``torch.nn.Linear`` and PyG ``Linear`` (lazy ones
  included: a first forward pass initialises them), stored ``[out, in]``, and PyG
  ``GCN2Conv``'s ``weight1`` / ``weight2``, stored ``[in, out]``: the layout comes from the
  layer type (:class:`~gnnprune.nn.WeightLayout`). Other parameters (biases, attention vectors)
  are not pruned.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .copruning import PruneTargets
from .data import GraphData
from .graph import EdgeSet, MaskedGraph
from .macs import aggregation_macs, transform_macs
from .nn import GraphModel, WeightLayout


def _linear_types() -> tuple[type, ...]:
    from torch_geometric.nn.dense.linear import Linear

    return nn.Linear, Linear


def _raw_weights() -> dict[type, tuple[str, ...]]:
    """Layers that multiply ``x @ W`` by a weight of their own, ``[in, out]``."""
    from torch_geometric.nn import GCN2Conv

    return {GCN2Conv: ("weight1", "weight2")}


@dataclass
class _LayerCall:
    """What one message-passing layer did in the first forward pass."""

    type_name: str
    takes_edge_weight: bool
    given_edge_weight: bool = False
    self_loops: bool = False
    cached: bool = False
    widths: list[int] = field(default_factory=list)  # channels of each propagation


class PyGModel(GraphModel):
    """A ``torch_geometric`` model of your own as a :class:`~gnnprune.nn.GraphModel`.

    Args:
        module: called as ``module(x, edge_index, edge_weight)`` (the third argument may be
            missing if edges are not pruned) and returning ``[N, num_classes]`` logits.
        data: the graph it is pruned on; one forward pass over it (eval mode, no gradient)
            initialises lazy layers and records which layers take the edge weights.
        targets: what will be pruned; the checks below are made for it.
        input_layer: the layer(s) reading ``data.x`` (module or weight names, e.g.
            ``"conv1.lin"``); default: the one weight whose input size is ``data.num_features``.

    Raises:
        ValueError: one line naming the layer or argument: edges pruned but a layer ignores
            ``edge_weight`` or caches its normalised graph; features pruned but no unique input
            layer; an ``input_layer`` that names no prunable weight or has another input size.

    Weight names (masks, reports) are those of ``module.named_parameters()``.
    """

    def __init__(self, module: nn.Module, data: GraphData, targets: PruneTargets = PruneTargets(),
                 input_layer: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.module = module
        self.name = type(module).__name__
        self._edge_weight_arg = _takes_third_argument(module)
        self.layers = self._first_forward(data)
        self._weights = _prunable_weights(module)
        self.input_weight_names = self._input_weights(data.num_features, targets, input_layer)
        problem = self.edge_weight_problem()
        self.uses_edge_weight = problem is None
        cached = next((f"{name} ({call.type_name})" for name, call in self.layers.items() if call.cached), None)
        if cached is not None and not targets.is_dense:
            raise ValueError(f"{cached} caches its normalised graph (cached=True), which would not follow the pruned "
                             "edges and learned edge weights; build it with cached=False")
        if targets.edges > 0 and problem is not None:
            raise ValueError(f"{problem}; set edges=0 (features and weights still prune)")

    # the GraphModel contract ---------------------------------------------------------------------
    def call_args(self, x, graph: MaskedGraph) -> tuple:
        """``(x, edge_index, edge_weight)``: ``x`` dense and full width (dead columns zero, live
        ones gated), the kept edges in both directions, their learned weights (``None``: 1)."""
        dense = x if isinstance(x, Tensor) else x.to_dense()
        if not self._edge_weight_arg:
            return dense, graph.edge_index
        return dense, graph.edge_index, graph.directed_edge_weight if self.uses_edge_weight else None

    def forward(self, x, graph: MaskedGraph) -> Tensor:
        return self.module(*self.call_args(x, graph))

    def prunable_weights(self) -> dict[str, nn.Parameter]:
        return {name: param for name, (param, _) in self._weights.items()}

    def weight_layout(self, name: str) -> WeightLayout:
        return self._weights[name][1]

    def weight_owner(self, name: str) -> tuple[nn.Module, str]:
        module_name, _, attr = name.rpartition(".")
        return self.module.get_submodule(module_name), attr

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: dict[str, Tensor] | None = None) -> list[dict]:
        """Per message-passing layer (and per weight outside one): kept weights x nodes, plus one
        MAC per operator entry (kept edges both ways, a self-loop per node if the layer adds
        them) and propagated channel, for every propagation the layer made in the first pass.
        ``live_units`` is unused: a wrapped model declares no hidden-unit groups."""
        layers: dict[str, dict] = {}
        for name, call in self.layers.items():
            entries = 2 * int(kept_edges) + (num_nodes if call.self_loops else 0)
            layers[name] = {"layer": name, "transform": 0,
                            "aggregation": sum(aggregation_macs(entries, width) for width in call.widths)}
        for name in self._weights:
            owner = max((layer for layer in self.layers if name.startswith(layer + ".")), key=len,
                        default=name.rpartition(".")[0])
            entry = layers.setdefault(owner, {"layer": owner, "transform": 0, "aggregation": 0})
            entry["transform"] += transform_macs(kept_weights[name], num_nodes)
        return list(layers.values())

    # checks --------------------------------------------------------------------------------------
    def edge_weight_problem(self) -> str | None:
        """Why learned edge weights would not reach every message-passing layer (``None``: they do)."""
        if not self.layers:
            return f"{self.name} runs no torch_geometric message-passing layer that could take edge_weight"
        for name, call in self.layers.items():
            if not call.takes_edge_weight:
                return f"{name} ({call.type_name}) ignores edge_weight"
        if not self._edge_weight_arg:
            return f"{self.name}.forward takes no edge_weight (a third argument)"
        for name, call in self.layers.items():
            if not call.given_edge_weight:
                return f"{name} ({call.type_name}) is called without the model's edge_weight"
        return None

    def _input_weights(self, num_features: int, targets: PruneTargets,
                       input_layer: str | Sequence[str] | None) -> tuple[str, ...]:
        sizes = {name: param.shape[layout.input_axis] for name, (param, layout) in self._weights.items()}
        if input_layer is not None:
            names = tuple(self._weight_name(layer) for layer in ([input_layer] if isinstance(input_layer, str)
                                                                 else input_layer))
            for layer, name in zip([input_layer] if isinstance(input_layer, str) else input_layer, names):
                if sizes[name] != num_features:
                    raise ValueError(f"input_layer {layer!r} takes {sizes[name]} inputs, but the data has "
                                     f"{num_features} features")
            return names
        candidates = tuple(name for name, size in sizes.items() if size == num_features)
        if len(candidates) == 1 or targets.features == 0:
            return candidates if len(candidates) == 1 else ()
        found = (f"{len(candidates)} weights take {num_features} inputs ({', '.join(candidates)})" if candidates
                 else f"no torch.nn.Linear / PyG Linear weight takes {num_features} inputs")
        example = candidates[0].removesuffix(".weight") if candidates else "conv1.lin"
        raise ValueError(f"cannot tell which layer of {self.name} reads the {num_features} input features: {found}; "
                         f"name it with input_layer, e.g. input_layer={example!r}")

    def _weight_name(self, layer: str) -> str:
        for name in (layer, f"{layer}.weight"):
            if name in self._weights:
                return name
        raise ValueError(f"input_layer {layer!r} names no prunable weight of {self.name}; choose from "
                         f"{', '.join(name.removesuffix('.weight') for name in self._weights)}")

    @torch.no_grad()
    def _first_forward(self, data: GraphData) -> dict[str, _LayerCall]:
        """One eval-mode pass over the whole graph: initialises lazy layers and records, per
        message-passing layer, whether it was given the edge weights and what it propagated."""
        from torch_geometric.nn import MessagePassing

        edge_index = data.edges.directed()
        edge_weight = torch.ones(edge_index.size(1))
        calls: dict[str, _LayerCall] = {}
        handles = []
        for name, layer in self.module.named_modules():
            if not isinstance(layer, MessagePassing):
                continue
            signature = inspect.signature(layer.forward)
            handles.append(layer.register_forward_pre_hook(
                _record_call(calls, name, layer, signature, edge_weight), with_kwargs=True))
            handles.append(layer.register_propagate_forward_pre_hook(_record_width(calls, name)))
        was_training = self.module.training
        self.module.eval()
        try:
            args = (data.x.float(), edge_index, edge_weight) if self._edge_weight_arg else (data.x.float(), edge_index)
            self.module(*args)
        finally:
            self.module.train(was_training)
            for handle in handles:
                handle.remove()
        return calls


def _takes_third_argument(module: nn.Module) -> bool:
    parameters = inspect.signature(module.forward).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _record_call(calls: dict, name: str, layer: nn.Module, signature: inspect.Signature, edge_weight: Tensor):
    takes = "edge_weight" in signature.parameters

    def hook(module, args, kwargs):
        call = calls.setdefault(name, _LayerCall(type(layer).__name__, takes,
                                                 self_loops=bool(getattr(layer, "add_self_loops", False)),
                                                 cached=bool(getattr(layer, "cached", False))))
        if takes:
            given = signature.bind_partial(*args, **kwargs).arguments.get("edge_weight")
            call.given_edge_weight = call.given_edge_weight or (
                isinstance(given, Tensor) and given.numel() == edge_weight.numel())

    return hook


def _record_width(calls: dict, name: str):
    def hook(module, inputs):
        x = inputs[2].get("x")
        x = x[0] if isinstance(x, tuple) else x
        if isinstance(x, Tensor) and name in calls:
            calls[name].widths.append(int(x.size(-1)))

    return hook


def _prunable_weights(module: nn.Module) -> dict[str, tuple[nn.Parameter, WeightLayout]]:
    """``name -> (weight, layout)`` of every linear map the model applies, in ``named_modules`` order."""
    linear, raw = _linear_types(), _raw_weights()
    weights = {}
    for owner, layer in module.named_modules():
        prefix = f"{owner}." if owner else ""
        if isinstance(layer, linear):
            weights[prefix + "weight"] = (layer.weight, WeightLayout.OUT_IN)
        for kind, attrs in raw.items():
            if isinstance(layer, kind):
                weights.update({prefix + attr: (getattr(layer, attr), WeightLayout.IN_OUT) for attr in attrs
                                if isinstance(getattr(layer, attr, None), nn.Parameter)})
    return weights


def from_pyg(data, name: str | None = None) -> GraphData:
    """A ``torch_geometric.data.Data`` node-classification graph as :class:`~gnnprune.data.GraphData`.

    Needs ``x``, an undirected ``edge_index`` without self-loops (the layers add their own;
    loops are never pruned), ``y`` (``[N]`` class labels) and one split in
    ``train_mask`` / ``val_mask`` / ``test_mask``. Edge weights or attributes are refused:
    co-pruning starts every edge at weight 1 and learns its weight.

    Raises:
        ValueError: one line naming the field and the fix.
    """
    from torch_geometric.utils import contains_self_loops, is_undirected

    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        if getattr(data, key, None) is None:
            raise ValueError(f"data.{key} is missing; co-pruning needs x, edge_index, y and a train/val/test split")
    for key in ("edge_weight", "edge_attr"):
        if getattr(data, key, None) is not None:
            raise ValueError(f"data.{key} is not used: every edge starts at weight 1 and its weight is learned; "
                             f"drop it (data.{key} = None)")
    for key in ("train_mask", "val_mask", "test_mask"):
        mask = getattr(data, key)
        if mask.dim() != 1:
            raise ValueError(f"data.{key} holds {mask.size(1)} splits; pick one, e.g. data.{key} = data.{key}[:, 0]")
    n = int(data.num_nodes)
    if not is_undirected(data.edge_index, num_nodes=n):
        raise ValueError("data.edge_index is directed, but one mask entry covers both directions of an edge; "
                         "make it undirected first (torch_geometric.transforms.ToUndirected())")
    if contains_self_loops(data.edge_index):
        raise ValueError("data.edge_index has self-loops; remove them (torch_geometric.utils.remove_self_loops): "
                         "the layers add their own")
    y = data.y.view(-1).long()
    return GraphData(name or getattr(data, "name", None) or "pyg", data.x.float(),
                     EdgeSet.from_edge_index(data.edge_index, n), y, data.train_mask.bool(), data.val_mask.bool(),
                     data.test_mask.bool(), num_classes=int(y.max()) + 1, info={"source": "torch_geometric Data"})

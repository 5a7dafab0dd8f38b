"""Shared pieces of the mask-aware models."""
from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..sparse import SparseMatrix


class Linear(nn.Module):
    """``x @ W + b`` with ``W`` stored as ``[in, out]``; ``x`` may be a :class:`SparseMatrix`.

    Args:
        in_channels: input width.
        out_channels: output width.
        bias: add a learnable bias.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.weight.size(0) + self.weight.size(1)))  # Glorot uniform
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor | SparseMatrix) -> Tensor:
        out = x @ self.weight
        return out if self.bias is None else out.add_(self.bias)  # in place: no second [N, out] buffer

    def extra_repr(self) -> str:
        return f"{self.weight.size(0)}, {self.weight.size(1)}, bias={self.bias is not None}"


class UnitRole(str, enum.Enum):
    """What a parameter slice does with a hidden unit.

    Sets the value a regrown unit starts from, and when a trained unit can be cut out exactly
    (:func:`gnnprune.unit_spaces.dead_units`).
    """

    PRODUCER = "producer"  # computes the unit (a column of an ``[in, out]`` weight): re-drawn, Glorot uniform
    BIAS = "bias"          # an additive entry of the unit's value, before its activation (bias): 0
    SCALE = "scale"        # a norm's multiplicative entry of the unit (norm scale): 1
    SHIFT = "shift"        # a norm's additive entry of the unit (norm shift): 0
    CONSUMER = "consumer"  # reads the unit (a row of the next weight, an attention vector entry): 0
    STATE = "state"        # a buffer entry of the unit (norm running statistics, head index): never pruned


class Activation(str, enum.Enum):
    """The activation applied to a unit's value before anything reads it."""

    RELU = "relu"
    ELU = "elu"
    IDENTITY = "identity"

    def silences(self, bias: Tensor) -> Tensor:
        """Bool per entry: ``activation(bias) == 0``."""
        return bias <= 0 if self is Activation.RELU else bias == 0


@dataclass(frozen=True)
class UnitSlice:
    """Where the units of a group sit in one parameter.

    Unit ``u`` of the group is the sub-tensor of parameter ``param`` at flat index ``u`` over
    the consecutive axes ``dims`` (row-major), all other axes whole: ``dims=(1,)`` of an
    ``[in, out]`` weight is column ``u``; ``dims=(0, 1)`` of a ``[heads, channels]`` attention
    vector is entry ``divmod(u, channels)``.
    """

    param: str
    dims: tuple[int, ...]
    role: UnitRole

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        if not dims or list(dims) != list(range(dims[0], dims[0] + len(dims))):
            raise ValueError(f"unit slice of {self.param!r}: dims must be consecutive axes, got {self.dims}")
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "role", UnitRole(self.role))


@dataclass(frozen=True)
class UnitGroup:
    """``size`` hidden units that share one width, and every parameter slice that belongs to them.

    Pruning unit ``u`` zeroes its slice of every member of ``slices``: what produces it (weight
    column, bias entry), what normalises it (norm scale and shift) and what reads it (next
    weight's row), so the unit's output is identically zero and it can be cut from the model.

    Attributes:
        size: number of units.
        slices: the parameter slices of the units (what unit pruning masks).
        activation: applied to the unit's value (producers' sum plus its ``BIAS`` entries)
            before anything reads it.
        buffers: buffer slices (role ``STATE``) cut out with a unit but never pruned.
    """

    size: int
    slices: tuple[UnitSlice, ...]
    activation: Activation = Activation.IDENTITY
    buffers: tuple[UnitSlice, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "activation", Activation(self.activation))
        if any(piece.role is not UnitRole.STATE for piece in self.buffers):
            raise ValueError("buffer slices of a unit group must have the role 'state'")


def live_width(live_units: Mapping[str, Tensor] | None, group: str, width: int) -> int:
    """Live units of ``group`` (its keep-mask in ``live_units``), or ``width`` when it is not pruned by unit."""
    return width if live_units is None or group not in live_units else int(live_units[group].sum())
class WeightLayout(str, enum.Enum):
    """Which axis of a weight matrix indexes its inputs.

    ``IN_OUT``: ``y = x @ W`` with ``W`` of shape ``[in, out]`` (this package's :class:`Linear`,
    PyG's ``GCN2Conv.weight1``). ``OUT_IN``: ``y = x @ W.T`` with ``W`` of shape ``[out, in]``
    (``torch.nn.Linear``, PyG's ``Linear``). A pruned input feature removes a slice along the
    input axis; an output unit is a slice along the output axis.
    """

    IN_OUT = "in_out"
    OUT_IN = "out_in"

    @property
    def input_axis(self) -> int:
        return 0 if self is WeightLayout.IN_OUT else -1

    @property
    def output_axis(self) -> int:
        return -1 if self is WeightLayout.IN_OUT else 0


class GraphModel(nn.Module):
    """Base of the node-classification models: ``logits = model(x, graph)``.

    Models know nothing of masks. They declare which weights are prunable and which of them
    read raw input features row by row (so that a pruned feature column also removes its
    weight row).
    """

    #: names (as in ``named_parameters``) of weights whose rows index input features
    input_weight_names: tuple[str, ...] = ()
    #: whether the model's output depends on ``graph.edge_weight`` (learned edge weights are
    #: only created for models that use them)
    uses_edge_weight: bool = True

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def hidden_units(self) -> dict[str, UnitGroup]:
        """Hidden-unit groups by name: what structured pruning (``--weight-structure unit``)
        masks and what the export cuts out (:mod:`gnnprune.unit_spaces`).

        A group lists every parameter slice of its units (see :class:`UnitGroup`). Class
        outputs are never a unit. Default: none (a model without hidden units).
        """
        return {}
    def call_args(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> tuple:
        """The arguments of the module's own call for these inputs (``model(*args)``);
        a wrapped PyG model takes ``(x, edge_index, edge_weight)`` instead."""
        return x, graph

    def input_units(self) -> UnitGroup:
        """The input feature columns as units: nothing in the model produces them; the rows of
        :attr:`input_weight_names` read them."""
        size = int(self.get_parameter(self.input_weight_names[0]).size(0))
        return UnitGroup(size, tuple(UnitSlice(name, (0,), UnitRole.CONSUMER) for name in self.input_weight_names))

    def separate_units(self) -> None:
        """Swap in layers from which every :meth:`hidden_units` unit can be cut one by one
        (GAT: heads of unequal widths); outputs unchanged. Default: nothing to swap."""

    def prunable_weights(self) -> dict[str, nn.Parameter]:
        """Every weight matrix (2-D parameter); biases are never pruned."""
        return {name: p for name, p in self.named_parameters() if p.dim() >= 2}

    def weight_layout(self, name: str) -> WeightLayout:
        """Axis layout of prunable weight ``name``; this package's models store ``[in, out]``."""
        return WeightLayout.IN_OUT

    def weight_owner(self, name: str) -> tuple[nn.Module, str]:
        """The module holding prunable weight ``name`` and its attribute name there."""
        module_name, _, attr = name.rpartition(".")
        return self.get_submodule(module_name), attr

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups; override for per-group decay (e.g. GCNII)."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:  # pragma: no cover
        """Per-layer ``{"layer", "transform", "aggregation"}`` MAC counts for the given kept sizes.

        ``live_units``: keep-mask of each pruned :meth:`hidden_units` group; aggregation then
        runs at the live width (the model with its dead units cut out).
        """
        raise NotImplementedError

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

"""Which units of a trained model can be removed exactly, and removing them.

A *unit space* is one dimension that several weights share: the input feature columns, or
the hidden units between two layers. Each weight that writes a unit's value (its
*producers*: a column of ``W`` in ``x W``), the bias added to it, the activation after it and
each weight that reads it (its *consumers*: a row of the next ``W``) is a slice of the space.
A unit can be removed from every one of those tensors without changing the model's output
when

* its value is identically zero: every producer slice is zero and the activation maps its
  bias to 0 (``relu(b) = 0`` for ``b <= 0``, ``elu(b) = 0`` for ``b = 0``; no bias is 0); or
* nothing reads it: every consumer slice is zero.

Removing units can make more removable (a hidden unit whose producer rows all read removed
features), so :func:`live_units` iterates to a fixed point. Input feature columns are a
space without producers (the input): a column goes when every weight row that reads it is
zero.

The description per model is in :func:`unit_spaces`. Where removal would not be exact the
model has no hidden space:

* ``gcn``, ``sage``, ``appnp``: one space between each two layers (ReLU).
* ``gat``: one space per hidden layer, the concatenated columns of all heads (ELU). A column
  is also read by its head's attention vectors (``att_src``, ``att_dst``), so "nothing reads
  it" needs those entries zero too. Heads may end up with different widths, so hidden
  layers become :class:`~gnnprune.nn.gat.RaggedGATConv` (:func:`prepare`); a head with no
  column left disappears with its softmax.
* ``gcn2``: the initial residual and the identity mapping carry unit ``j`` of every layer to
  unit ``j`` of the next, so all layers share one space: a unit goes from every layer at once
  (its ``lin_in`` column and bias, row and column ``j`` of every GCNII weight, row ``j`` of
  ``lin_out``), when ``lin_in``'s column and every GCNII weight's column ``j`` are zero with
  ``relu(b_j) = 0``, or when row ``j`` of every GCNII weight and of ``lin_out`` is zero.
* ``resgcn``: none. LayerNorm averages over all hidden channels, so even an identically zero
  channel changes the others' outputs.
* ``sgc``: no hidden layer.

Every model has the input feature space (rows of its :attr:`~GraphModel.input_weight_names`).
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class Activation(str, enum.Enum):
    """The activation applied to a unit's value."""

    RELU = "relu"
    ELU = "elu"
    IDENTITY = "identity"

    def silences(self, bias: Tensor) -> Tensor:
        """Bool per entry: ``activation(bias) == 0``."""
        return bias <= 0 if self is Activation.RELU else bias == 0


@dataclass(frozen=True)
class Slice:
    """Tensor ``name`` (a key of the model's ``state_dict``), indexed by the space's units along ``dim``."""

    name: str
    dim: int


@dataclass(frozen=True)
class UnitSpace:
    """A dimension shared by several tensors of a model.

    Attributes:
        name: e.g. ``"features"`` or ``"convs.0"`` (the layer whose output it is).
        size: number of units.
        producers: slices that write a unit's value; ``None`` for the model's input.
        consumers: slices that read it.
        bias: the bias added to the value before the activation, if any.
        activation: applied to the value.
        carried: slices removed with the units but not part of the test (e.g. a head index).
    """

    name: str
    size: int
    producers: tuple[Slice, ...] | None
    consumers: tuple[Slice, ...]
    bias: str | None = None
    activation: Activation = Activation.IDENTITY
    carried: tuple[Slice, ...] = ()

    def slices(self) -> tuple[Slice, ...]:
        """Every slice the units are removed from."""
        bias = (Slice(self.bias, 0),) if self.bias is not None else ()
        return (*(self.producers or ()), *bias, *self.consumers, *self.carried)


def _zero_along(tensor: Tensor, dim: int) -> Tensor:
    """Bool per index of ``dim``: the slice of ``tensor`` there is all zero."""
    return ~(tensor != 0).movedim(dim, 0).reshape(tensor.size(dim), -1).any(dim=1)


def dead_units(space: UnitSpace, tensors: dict[str, Tensor]) -> Tensor:
    """Bool ``[size]``: units whose value is identically zero or that nothing reads (see module doc)."""
    unread = torch.ones(space.size, dtype=torch.bool)
    for s in space.consumers:
        unread &= _zero_along(tensors[s.name], s.dim)
    if space.producers is None:
        return unread
    silent = torch.ones(space.size, dtype=torch.bool)
    for s in space.producers:
        silent &= _zero_along(tensors[s.name], s.dim)
    if space.bias is not None:
        silent &= space.activation.silences(tensors[space.bias])
    return silent | unread


def live_units(model: nn.Module, spaces: list[UnitSpace]) -> dict[str, Tensor]:
    """Bool keep-mask per space after removing dead units until none is left (a fixed point).

    Works on a copy of the tensors: a removed unit's slices are zeroed there (exact, since the
    unit contributes nothing), which may leave units of other spaces dead.
    """
    tensors = {name: t.detach().clone() for name, t in model.state_dict().items()}
    keep = {space.name: torch.ones(space.size, dtype=torch.bool) for space in spaces}
    changed = True
    while changed:
        changed = False
        for space in spaces:
            newly = dead_units(space, tensors) & keep[space.name]
            if not bool(newly.any()):
                continue
            changed = True
            keep[space.name] &= ~newly
            index = newly.nonzero().view(-1)
            for s in space.slices():
                tensors[s.name].index_fill_(s.dim, index, 0)
    return keep


def remove_units(model: nn.Module, spaces: list[UnitSpace], keep: dict[str, Tensor]) -> None:
    """Replace every tensor a space runs through by its kept slices (in place, no gradients)."""
    cuts: dict[str, dict[int, Tensor]] = {}
    for space in spaces:
        index = keep[space.name].nonzero().view(-1)
        for s in space.slices():
            if s.dim in cuts.setdefault(s.name, {}):
                raise ValueError(f"{s.name} dim {s.dim} belongs to two unit spaces")
            cuts[s.name][s.dim] = index
    for name, dims in cuts.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        tensor = getattr(module, attr).detach()
        for dim, index in dims.items():
            tensor = tensor.index_select(dim, index)
        set_tensor(module, attr, tensor.contiguous())


def set_tensor(module: nn.Module, attr: str, tensor: Tensor) -> None:
    """Put ``tensor`` in place of parameter or buffer ``attr`` of ``module`` (any shape; parameters frozen)."""
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    elif attr in module._buffers:
        module._buffers[attr] = tensor
    else:
        raise KeyError(f"{type(module).__name__} has no parameter or buffer {attr!r}")


# per-model descriptions ----------------------------------------------------------------------------
def feature_space(model: nn.Module) -> UnitSpace:
    """The input feature columns: read by the rows of the model's input weights."""
    names = model.input_weight_names
    size = int(model.get_parameter(names[0]).size(0))
    return UnitSpace("features", size, None, tuple(Slice(name, 0) for name in names))


def _layer_spaces(prefix: str, count: int, producers: tuple[str, ...], bias: str,
                  activation: Activation) -> list[UnitSpace]:
    """Spaces between layers ``prefix.i`` and ``prefix.(i + 1)``: layer i's weights write, layer i + 1's read."""
    spaces = []
    for i in range(count - 1):
        here, after = f"{prefix}.{i}", f"{prefix}.{i + 1}"
        spaces.append(UnitSpace(here, 0, tuple(Slice(f"{here}.{p}", 1) for p in producers),
                                tuple(Slice(f"{after}.{p}", 0) for p in producers), f"{here}.{bias}", activation))
    return spaces


def _gcn(model) -> list[UnitSpace]:
    return _layer_spaces("convs", len(model.convs), ("lin.weight",), "bias", Activation.RELU)


def _sage(model) -> list[UnitSpace]:
    return _layer_spaces("convs", len(model.convs), ("lin_root.weight", "lin_neigh.weight"), "bias", Activation.RELU)


def _appnp(model) -> list[UnitSpace]:
    return _layer_spaces("lins", len(model.lins), ("weight",), "bias", Activation.RELU)


def _gat(model) -> list[UnitSpace]:
    spaces = []
    for i in range(len(model.convs) - 1):
        here = f"convs.{i}"
        spaces.append(UnitSpace(here, 0, (Slice(f"{here}.lin.weight", 1),),
                                (Slice(f"{here}.att_src", 0), Slice(f"{here}.att_dst", 0),
                                 Slice(f"convs.{i + 1}.lin.weight", 0)),
                                f"{here}.bias", Activation.ELU, carried=(Slice(f"{here}.head_index", 0),)))
    return spaces


def _gcn2(model) -> list[UnitSpace]:
    convs = [f"convs.{i}.lin.weight" for i in range(len(model.convs))]
    return [UnitSpace("hidden", 0, (Slice("lin_in.weight", 1), *(Slice(w, 1) for w in convs)),
                      (*(Slice(w, 0) for w in convs), Slice("lin_out.weight", 0)), "lin_in.bias", Activation.RELU)]


def _prepare_gat(model) -> None:
    from .nn.gat import GATConv, RaggedGATConv

    for i, conv in enumerate(model.convs):
        if isinstance(conv, GATConv) and conv.concat:
            model.convs[i] = RaggedGATConv.from_conv(conv)


#: model class name -> (hidden spaces of a prepared model, preparation); models not listed have the feature space only
DESCRIPTIONS: dict[str, tuple[Callable[[nn.Module], list[UnitSpace]], Callable[[nn.Module], None] | None]] = {
    "GCN": (_gcn, None),
    "GraphSAGE": (_sage, None),
    "APPNP": (_appnp, None),
    "GAT": (_gat, _prepare_gat),
    "GCNII": (_gcn2, None),
}


def prepare(model: nn.Module) -> None:
    """Swap in layers whose units can be removed one by one (GAT: :class:`RaggedGATConv`); outputs unchanged."""
    _, preparation = DESCRIPTIONS.get(type(model).__name__, (None, None))
    if preparation is not None:
        preparation(model)


def unit_spaces(model: nn.Module) -> list[UnitSpace]:
    """The unit spaces of a :func:`prepare`-d model: input features first, then its hidden spaces."""
    describe, _ = DESCRIPTIONS.get(type(model).__name__, (lambda m: [], None))
    spaces = [feature_space(model)]
    for space in describe(model):
        first = space.producers[0]
        size = int(model.get_parameter(first.name).size(first.dim))
        spaces.append(UnitSpace(space.name, size, space.producers, space.consumers, space.bias, space.activation,
                                space.carried))
    return spaces

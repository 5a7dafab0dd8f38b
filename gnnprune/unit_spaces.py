"""Which units of a trained model can be removed exactly, and removing them.

The units are the model's own description, the one structured pruning masks: the input
feature columns (:meth:`~gnnprune.nn.GraphModel.input_units`) and the hidden units
(:meth:`~gnnprune.nn.GraphModel.hidden_units`), each a :class:`~gnnprune.nn.UnitGroup` of
parameter slices with their :class:`~gnnprune.nn.UnitRole`. Unit ``u`` of a group can be cut
from every slice of the group (and its buffers) without changing the model's output when no
norm reads it, i.e. every ``SCALE`` and ``SHIFT`` entry is zero (a LayerNorm counts a channel
in its statistics unless both are, see :class:`~gnnprune.nn.resgcn.LiveLayerNorm`; BatchNorm
then outputs 0 for it), and

* its value is identically zero: every ``PRODUCER`` slice is zero and the group's activation
  maps each ``BIAS`` entry to 0 (``relu(b) = 0`` for ``b <= 0``, ``elu(b) = 0`` and
  ``b = 0`` for ``b = 0``); a group without producers is the model's input, never zero; or
* nothing reads it: every ``CONSUMER`` slice is zero.

Removing units can make more removable (a hidden unit whose producer rows all read removed
features), so :func:`live_units` iterates to a fixed point.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .copruning import FEATURES
from .nn.base import GraphModel, UnitGroup, UnitRole, UnitSlice


def unit_groups(model: GraphModel) -> dict[str, UnitGroup]:
    """Every unit group of ``model``: the input feature columns (``"features"``) first, then its hidden units."""
    hidden = model.hidden_units()
    if FEATURES in hidden:
        raise ValueError(f"{type(model).__name__} names a hidden unit group {FEATURES!r}, the input's name")
    return {FEATURES: model.input_units(), **hidden}


def _per_unit(flags: Tensor, piece: UnitSlice, size: int) -> Tensor:
    """Bool ``[size]``: ``flags`` (shaped like ``piece``'s tensor) hold over the whole slice of each unit."""
    first, last = piece.dims[0], piece.dims[-1]
    return flags.flatten(first, last).movedim(first, 0).reshape(size, -1).all(dim=1)


def _holds(group: UnitGroup, tensors: Mapping[str, Tensor], role: UnitRole,
           test: Callable[[Tensor], Tensor]) -> Tensor:
    """Bool ``[size]``: ``test`` holds over every slice of role ``role`` (true where the group has none)."""
    holds = torch.ones(group.size, dtype=torch.bool)
    for piece in group.slices:
        if piece.role is role:
            holds &= _per_unit(test(tensors[piece.param]), piece, group.size)
    return holds


def dead_units(group: UnitGroup, tensors: Mapping[str, Tensor]) -> Tensor:
    """Bool ``[size]``: units no norm reads whose value is identically zero or that nothing reads (module doc)."""
    def zero(t: Tensor) -> Tensor:
        return t == 0

    unnormed = _holds(group, tensors, UnitRole.SCALE, zero) & _holds(group, tensors, UnitRole.SHIFT, zero)
    unread = _holds(group, tensors, UnitRole.CONSUMER, zero)
    if not any(piece.role is UnitRole.PRODUCER for piece in group.slices):
        return unnormed & unread
    silent = _holds(group, tensors, UnitRole.PRODUCER, zero) & _holds(group, tensors, UnitRole.BIAS,
                                                                        group.activation.silences)
    return unnormed & (silent | unread)


def live_units(model: nn.Module, groups: Mapping[str, UnitGroup]) -> dict[str, Tensor]:
    """Bool keep-mask per group after removing dead units until none is left (a fixed point).

    Works on a copy of the tensors: a removed unit's slices are zeroed there (exact, since the
    unit contributes nothing), which may leave units of other groups dead.
    """
    tensors = {name: t.detach().clone(memory_format=torch.contiguous_format) for name, t in model.state_dict().items()}
    keep = {name: torch.ones(group.size, dtype=torch.bool) for name, group in groups.items()}
    changed = True
    while changed:
        changed = False
        for name, group in groups.items():
            newly = dead_units(group, tensors) & keep[name]
            if not bool(newly.any()):
                continue
            changed = True
            keep[name] &= ~newly
            index = newly.nonzero().view(-1)
            for piece in group.slices:
                tensors[piece.param].flatten(piece.dims[0], piece.dims[-1]).index_fill_(piece.dims[0], index, 0)
    return keep


def remove_units(model: nn.Module, groups: Mapping[str, UnitGroup], keep: Mapping[str, Tensor]) -> None:
    """Replace every tensor a group runs through by its kept slices (in place, no gradients).

    A slice over several axes (GAT's ``[heads, channels]`` attention vectors) can only stay
    whole: call :meth:`~gnnprune.nn.GraphModel.separate_units` first.
    """
    cuts: dict[str, dict[int, Tensor]] = {}
    for name, group in groups.items():
        if bool(keep[name].all()):
            continue
        index = keep[name].nonzero().view(-1)
        for piece in (*group.slices, *group.buffers):
            if len(piece.dims) > 1:
                raise ValueError(f"cannot cut units of group {name!r} from {piece.param} over dims {piece.dims}")
            if piece.dims[0] in cuts.setdefault(piece.param, {}):
                raise ValueError(f"{piece.param} dim {piece.dims[0]} belongs to two unit groups")
            cuts[piece.param][piece.dims[0]] = index
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

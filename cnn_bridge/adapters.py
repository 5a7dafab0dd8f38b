r"""Register CNN weights as sites of the shared :class:`~gnnprune.masks.MaskEngine` and apply them.

A site's entries map onto a ``Conv2d`` weight ``[C_out, C_in, k_h, k_w]`` or a ``Linear`` weight
``[C_out, C_in]`` in one of three ways (its kind):

* ``weight``: one entry per element; the entry mask has the weight's shape.
* ``channel``: one entry per output channel, shape ``[C_out]``; it covers the weight's row
  (and the bias entry, if any).
* ``block``: one entry per (output group, input group) pair, shape ``[n_out, n_in]``; the
  channels are split into near-equal contiguous groups and entry ``(i, j)`` covers
  ``W[out_group_i, in_group_j, :, :]``.

Masked weights stay dense tensors with exact zeros at dead entries: :class:`WeightMasks` zeroes
them after every optimizer step and masks their gradients before it.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gnnprune.masks import MaskEngine, Site, SiteKind

MASKABLE = (nn.Conv2d, nn.Linear)


def group_sizes(channels: int, groups: int) -> list[int]:
    """Split ``channels`` into ``groups`` contiguous groups whose sizes differ by at most one.

    Example: ``group_sizes(10, 4) == [3, 3, 2, 2]``.
    """
    if not 1 <= groups <= channels:
        raise ValueError(f"number of groups must be in [1, {channels}] (channels), got {groups}")
    base, extra = divmod(channels, groups)
    return [base + 1] * extra + [base] * (groups - extra)


def _expand_element(mask: Tensor, shape: torch.Size, meta: dict) -> Tensor:
    return mask


def _expand_channel(mask: Tensor, shape: torch.Size, meta: dict) -> Tensor:
    return mask.view(-1, *[1] * (len(shape) - 1)).expand(shape)


def _expand_block(mask: Tensor, shape: torch.Size, meta: dict) -> Tensor:
    rows = torch.tensor(meta["out_groups"])
    cols = torch.tensor(meta["in_groups"])
    full = mask.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)
    return full.view(*full.shape, *[1] * (len(shape) - 2)).expand(shape)


EXPANDERS: dict[SiteKind, Callable[[Tensor, torch.Size, dict], Tensor]] = {
    SiteKind.WEIGHT: _expand_element,
    SiteKind.CHANNEL: _expand_channel,
    SiteKind.BLOCK: _expand_block,
}


def weight_mask(site: Site) -> Tensor:
    """The site's entry mask expanded to its weight's shape (bool, ``meta["weight_shape"]``)."""
    shape = torch.Size(site.meta["weight_shape"])
    try:
        expand = EXPANDERS[site.kind]
    except KeyError:
        raise ValueError(f"site {site.name!r} of kind {site.kind.value!r} does not map onto a weight") from None
    return expand(site.mask, shape, site.meta)


def entry_shape(kind: SiteKind, weight: Tensor, groups: tuple[int, int] | None = None) -> tuple[int, ...]:
    """Shape of the entry mask of a site of ``kind`` over ``weight``."""
    if kind == SiteKind.WEIGHT:
        return tuple(weight.shape)
    if kind == SiteKind.CHANNEL:
        return (weight.shape[0],)
    if kind == SiteKind.BLOCK:
        if groups is None:
            raise ValueError("a block site needs groups=(n_out, n_in)")
        return groups
    raise ValueError(f"kind {kind.value!r} does not map onto a weight; use weight, channel or block")


def register_weight_site(engine: MaskEngine, model: nn.Module, module_name: str, kind: SiteKind | str,
                         groups: tuple[int, int] | None = None, mask: Tensor | None = None) -> Site:
    """Add a site over the weight of ``model.<module_name>`` (a ``Conv2d`` or ``Linear``).

    Args:
        kind: ``weight`` (elements), ``channel`` (output channels) or ``block`` (channel groups).
        groups: ``(n_out, n_in)`` channel groups, for block sites.
        mask: initial entry mask (default: all live).
    Returns:
        the site, named ``"<module_name>.weight"``; ``meta`` records the module, the weight's shape
        and, for block sites, the group sizes.
    """
    kind = SiteKind(kind)
    module = model.get_submodule(module_name)
    if not isinstance(module, MASKABLE):
        raise TypeError(f"{module_name} is a {type(module).__name__}; only Conv2d and Linear weights are maskable")
    if isinstance(module, nn.Conv2d) and module.groups != 1 and kind == SiteKind.BLOCK:
        raise ValueError(f"{module_name}: block masks need an ungrouped convolution (groups=1)")
    meta = {"module": module_name, "weight_shape": list(module.weight.shape)}
    if kind == SiteKind.BLOCK:
        if groups is None:
            raise ValueError("a block site needs groups=(n_out, n_in)")
        meta["out_groups"] = group_sizes(module.weight.shape[0], groups[0])
        meta["in_groups"] = group_sizes(module.weight.shape[1], groups[1])
    return engine.add(f"{module_name}.weight", kind, entry_shape(kind, module.weight, groups), mask, **meta)


class WeightMasks:
    """Applies the engine's weight/channel/block sites to a model's weights.

    Expanded masks are cached; call :meth:`refresh` after the engine's masks change.
    """

    def __init__(self, engine: MaskEngine, model: nn.Module) -> None:
        self.engine = engine
        self.model = model
        self.refresh()

    def refresh(self) -> None:
        self._masks: dict[str, tuple[nn.Module, Tensor]] = {}
        for site in self.engine:
            if site.kind in EXPANDERS and "module" in site.meta:
                module = self.model.get_submodule(site.meta["module"])
                self._masks[site.meta["module"]] = (module, weight_mask(site).to(module.weight.device))

    def weight_masks(self) -> dict[str, Tensor]:
        """``{module name: bool mask shaped like its weight}``."""
        return {name: mask for name, (_, mask) in self._masks.items()}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every dead weight (and the bias of a dead output channel)."""
        for module, mask in self._masks.values():
            module.weight.mul_(mask)
            if module.bias is not None:
                module.bias.mul_(self._live_rows(mask))

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient at every dead weight, so optimizer moments stay zero there."""
        for module, mask in self._masks.values():
            if module.weight.grad is not None:
                module.weight.grad.mul_(mask)
            if module.bias is not None and module.bias.grad is not None:
                module.bias.grad.mul_(self._live_rows(mask))

    @staticmethod
    def _live_rows(mask: Tensor) -> Tensor:
        return mask.reshape(mask.shape[0], -1).any(dim=1)

    def kept(self) -> int:
        return sum(int(mask.sum()) for _, mask in self._masks.values())

    def total(self) -> int:
        return sum(mask.numel() for _, mask in self._masks.values())

"""Co-pruning state: the masks of a model's weights, a graph's edges and its feature columns.

:class:`CoPruner` owns the :class:`~gnnprune.masks.MaskEngine` of one run and everything that
turns masks into computation: kept edges become the operators' sparsity pattern, kept
feature columns become the input matrix, and weight masks zero dead weights. It also owns
the learned gates (a logit per undirected edge, a gate per feature column) and computes the
probe gradients that score dead entries for regrowth.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .data import GraphData
from .features import NodeFeatures
from .graph import MaskedGraph
from .masks import (MaskEngine, SiteKind, SiteUpdate, WeightDistribution, kept_by_global_rank, kept_per_tensor,
                    prune_and_regrow)
from .nn import GraphModel, UnitGroup, UnitRole, UnitSlice, WeightLayout
from .scoring import SiteView, descent, endpoint_rank, gradient_magnitude, magnitude

EDGES = "edges"
FEATURES = "features"
WEIGHT_PREFIX = "weight:"
UNIT_PREFIX = "unit:"


@dataclass(frozen=True)
class PruneTargets:
    """Target sparsity (fraction removed) of each part, each in ``[0, 1)``."""

    weights: float = 0.0
    edges: float = 0.0
    features: float = 0.0

    def __post_init__(self) -> None:
        for part in ("weights", "edges", "features"):
            value = getattr(self, part)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{part} sparsity must be in [0, 1), got {value}")

    @property
    def is_dense(self) -> bool:
        return self.weights == self.edges == self.features == 0.0


class WeightGranularity(str, enum.Enum):
    """What one weight-mask entry covers."""

    ELEMENT = "element"  # one weight
    UNIT = "unit"        # one hidden unit: its slice of every parameter of its group (:meth:`GraphModel.hidden_units`)


class EdgeRanking(str, enum.Enum):
    """Which live edges an update compares when it decides what to prune."""

    GLOBAL = "global"  # all live edges by their score: the graph's weakest go first
    LOCAL = "local"    # by the score's percentile at both endpoints (:func:`~gnnprune.scoring.endpoint_rank`)


class FeatureScore(str, enum.Enum):
    """How live feature columns are scored when pruning."""

    MAGNITUDE = "magnitude"        # |gate| * ||weight row|| (:meth:`CoPruner.feature_magnitude`)
    CONTRIBUTION = "contribution"  # that times the column's L1 mass (:meth:`CoPruner.feature_contribution`)


@dataclass(frozen=True)
class ProbeResult:
    """Gradients at the current point with every dead entry present at value 0.

    Attributes:
        loss: the probe loss.
        edge_grad: ``[E]`` d loss / d (effective edge weight), dead edges included.
        feature_grad: ``[F]`` norm of d loss / d (input-weight row of each feature), with the
            feature present and its weights at zero: how much the feature would help.
        weight_grads: d loss / d parameter for every masked parameter (dense): the prunable
            weights, and in unit mode every parameter of a unit group (biases, norm affines).
    """

    loss: float
    edge_grad: Tensor
    feature_grad: Tensor
    weight_grads: dict[str, Tensor]


class CoPruner:
    """Masks and gates of one co-pruning run.

    Args:
        model: the model whose :meth:`~GraphModel.prunable_weights` become weight sites.
        data: the graph; its undirected edges and feature columns become sites.
        learn_edge_weights: train a parameter per undirected edge; the edge weight seen by the
            model is ``edge_activation(parameter)`` (only for a model that uses edge weights,
            :attr:`~gnnprune.nn.GraphModel.uses_edge_weight`).
        learn_feature_gates: train a gate per feature column (initialised to 1).
        edge_init_logit: initial value of the raw edge parameter (under the default sigmoid,
            3.0 gives edge weights of 0.953).
        edge_activation: maps the raw edge parameter to the non-negative edge weight the model
            sees (default ``torch.sigmoid``; UGS uses ``torch.abs`` on a mask initialised to 1).
        weight_granularity: element-wise masks, or masks over the model's hidden units
            (:attr:`WeightGranularity.UNIT`): a site per :meth:`~GraphModel.hidden_units` group,
            whose weight target is the fraction of its units removed. Class outputs are never
            units; a model without hidden units (SGC) has no unit site.
        weight_distribution: how the overall weight sparsity is spread over the weight tensors
            (uniform: each at the target; ERK: small tensors denser, same total; global: one
            ranking of all weights by score). Unit pruning takes the same fraction of every
            group: uniform only.
    """

    def __init__(self, model: GraphModel, data: GraphData, *, learn_edge_weights: bool = False,
                 learn_feature_gates: bool = False, edge_init_logit: float = 3.0,
                 edge_activation: Callable[[Tensor], Tensor] = torch.sigmoid,
                 weight_granularity: WeightGranularity = WeightGranularity.ELEMENT,
                 weight_distribution: WeightDistribution = WeightDistribution.UNIFORM) -> None:
        self.model = model
        self.edge_set = data.edges
        self.node_features = NodeFeatures(data.x)
        self.engine = MaskEngine()
        self.weights = model.prunable_weights()
        self.layouts = {name: WeightLayout(model.weight_layout(name)) for name in self.weights}
        self.granularity = WeightGranularity(weight_granularity)
        self.distribution = WeightDistribution(weight_distribution)
        self.unit_groups: dict[str, UnitGroup] = {}
        self.masked_params: dict[str, nn.Parameter] = dict(self.weights)
        self._unit_slices: dict[str, list[tuple[str, UnitSlice]]] = {}
        if self.granularity is WeightGranularity.UNIT:
            self._add_unit_sites(model)
        else:
            for name, p in self.weights.items():
                self.engine.add(WEIGHT_PREFIX + name, SiteKind.WEIGHT, p.shape, param=name,
                                granularity=self.granularity.value, reads_features=name in model.input_weight_names)
        self.engine.add(EDGES, SiteKind.EDGE, self.edge_set.num_edges)
        self.engine.add(FEATURES, SiteKind.FEATURE, self.node_features.num_features)
        self.edge_init_logit = float(edge_init_logit)
        self.edge_activation = edge_activation
        self.edge_logit = (nn.Parameter(torch.full((self.edge_set.num_edges,), self.edge_init_logit))
                           if learn_edge_weights and model.uses_edge_weight else None)
        self.feature_gate = nn.Parameter(torch.ones(self.node_features.num_features)) if learn_feature_gates else None
        self._all_edges = self.edge_set.select()
        self._all_features = self.node_features.select()
        self.refresh()

    def _add_unit_sites(self, model: GraphModel) -> None:
        if self.distribution is not WeightDistribution.UNIFORM:
            raise ValueError("unit pruning removes the same fraction of every unit group: "
                             "weight distribution must be 'uniform'")
        params = dict(model.named_parameters())
        self.unit_groups = dict(model.hidden_units())
        for group_name, group in self.unit_groups.items():
            for piece in group.slices:
                if piece.param not in params:
                    raise KeyError(f"unit group {group_name!r} names unknown parameter {piece.param!r}")
                shape = params[piece.param].shape
                if piece.dims[-1] >= len(shape) or math.prod(shape[d] for d in piece.dims) != group.size:
                    raise ValueError(f"unit group {group_name!r}: {piece.param} {tuple(shape)} over dims "
                                     f"{piece.dims} does not have {group.size} units")
                self.masked_params.setdefault(piece.param, params[piece.param])
                self._unit_slices.setdefault(piece.param, []).append((group_name, piece))
            self.engine.add(UNIT_PREFIX + group_name, SiteKind.UNIT, group.size, group=group_name,
                            params=sorted({piece.param for piece in group.slices}))

    # masks -> computation -------------------------------------------------------------------
    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.edge_logit, self.feature_gate) if p is not None]

    def refresh(self) -> None:
        """Rebuild kept-edge and kept-feature structures and zero dead weights (after mask changes)."""
        self._edges = self.edge_set.select(self.engine.mask(EDGES))
        self._features = self.node_features.select(self.engine.mask(FEATURES))
        self._weight_masks = {name: self._element_mask(name) for name in self.masked_params}
        self.apply_weight_masks()

    def weight_mask(self, name: str) -> Tensor:
        """Keep-mask over the elements of masked parameter ``name`` (a prunable weight, or in
        unit mode any parameter of a unit group); rows of pruned features are dead too."""
        return self._weight_masks[name]

    def unit_mask(self, group: str) -> Tensor:
        """``[units]`` bool keep-mask of unit group ``group`` (unit mode)."""
        return self.engine.mask(UNIT_PREFIX + group)

    def live_units(self) -> dict[str, Tensor]:
        """Keep-mask of every unit group (empty in element mode): the ``live_units`` of ``model.macs``."""
        return {group: self.unit_mask(group) for group in self.unit_groups}

    def _element_mask(self, name: str) -> Tensor:
        param = self.masked_params[name]
        if self.granularity is WeightGranularity.ELEMENT:
            mask = self.engine.mask(WEIGHT_PREFIX + name)
        else:
            mask = torch.ones(param.shape, dtype=torch.bool)
            for group, piece in self._unit_slices.get(name, ()):
                mask = mask & _unit_view(self.unit_mask(group), piece, param.shape)
        if name in self.model.input_weight_names:
            mask = mask & _along(self.engine.mask(FEATURES), param, self.layouts[name].input_axis)
        return mask

    def edge_weight(self, index: Tensor | None = None) -> Tensor | None:
        if self.edge_logit is None:
            return None
        logits = self.edge_logit if index is None else self.edge_logit.index_select(0, index)
        return self.edge_activation(logits)

    def graph(self) -> MaskedGraph:
        """The kept edges with their current (learned) weights."""
        return MaskedGraph(self._edges, self.edge_weight(self._edges.index))

    def inputs(self):
        """Kept feature columns, gated."""
        return self._features.gated(self.feature_gate)

    @torch.no_grad()
    def apply_weight_masks(self) -> None:
        for name, param in self.masked_params.items():
            param.mul_(self.weight_mask(name))

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient of dead weights, so optimizer moments of dead entries stay zero."""
        for name, param in self.masked_params.items():
            if param.grad is not None:
                param.grad.mul_(self.weight_mask(name))

    # measures ---------------------------------------------------------------------------------
    def kept_edges(self) -> int:
        return self._edges.num_kept

    def kept_feature_index(self) -> Tensor:
        return self.engine.mask(FEATURES).nonzero().view(-1)

    def kept_weights(self) -> dict[str, int]:
        """Live elements of every weight (feature rows included)."""
        return {name: int(self.weight_mask(name).sum()) for name in self.weights}

    def sparsity_report(self) -> dict:
        """Achieved sparsity per part and per weight (site counts and effective counts).

        In unit mode ``weights`` is the fraction of weight elements that are zero by a mask
        (units and feature rows), ``units`` the fraction of hidden units removed, and
        ``per_unit_group`` has the counts of each group.
        """
        weights = {}
        for name, param in self.weights.items():
            live = int(self.weight_mask(name).sum())
            weights[name] = {"effective_live_elements": live, "effective_sparsity": 1 - live / param.numel()}
            if self.granularity is WeightGranularity.ELEMENT:
                site = self.engine.site(WEIGHT_PREFIX + name)
                weights[name] = {"entries": site.numel, "live": site.live, "sparsity": site.sparsity, **weights[name]}
        edges, features = self.engine.site(EDGES), self.engine.site(FEATURES)
        units = {}
        if self.granularity is WeightGranularity.UNIT:
            total = sum(p.numel() for p in self.weights.values())
            live = sum(entry["effective_live_elements"] for entry in weights.values())
            groups = {name: self.engine.site(UNIT_PREFIX + name) for name in self.unit_groups}
            units = {"units": self.engine.sparsity(kind=SiteKind.UNIT), "weights": 1 - live / total if total else 0.0,
                     "per_unit_group": {name: {"units": site.numel, "live": site.live, "sparsity": site.sparsity}
                                        for name, site in groups.items()}}
        return {
            "weights": self.engine.sparsity(kind=SiteKind.WEIGHT),
            "edges": edges.sparsity,
            "features": features.sparsity,
            "kept_edges": edges.live, "total_edges": edges.numel,
            "kept_features": features.live, "total_features": features.numel,
            "per_weight": weights,
            **units,
        }

    # probe and update -------------------------------------------------------------------------
    def probe(self, loss_fn: Callable[[Tensor], Tensor]) -> ProbeResult:
        """One forward/backward with every dead edge and feature present at value 0.

        Dead edges enter the operator with weight 0 (a zero-weight edge changes neither the
        sum nor the degrees, so the forward is unchanged) and their weight gets a real
        gradient. Dead features enter with gate 1 but zero weight rows (unchanged forward
        again), so the gradient of their weight rows says how much they would help.
        Dropout is off. Gradients of the model are cleared afterwards.
        """
        edge_mask = self.engine.mask(EDGES)
        feature_mask = self.engine.mask(FEATURES)
        with torch.no_grad():
            current = self.edge_weight() if self.edge_logit is not None else torch.ones(edge_mask.numel())
            edge_value = current * edge_mask
            gate = torch.ones(feature_mask.numel()) if self.feature_gate is None else \
                torch.where(feature_mask, self.feature_gate, torch.ones(()))
        edge_value.requires_grad_(True)
        was_training = self.model.training
        self.model.eval()
        self.model.zero_grad(set_to_none=True)
        try:
            loss = self._probe_backward(loss_fn, gate, edge_value)
        finally:
            self.model.train(was_training)
        weight_grads = {name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                        for name, p in self.masked_params.items()}
        feature_grad = torch.zeros(feature_mask.numel())
        for name in self.model.input_weight_names:
            feature_grad += _slices(weight_grads[name], self.layouts[name].input_axis).norm(dim=1)
        self.model.zero_grad(set_to_none=True)
        edge_grad = torch.zeros_like(edge_value) if edge_value.grad is None else edge_value.grad.detach()
        return ProbeResult(float(loss), edge_grad, feature_grad, weight_grads)

    def _probe_backward(self, loss_fn: Callable[[Tensor], Tensor], gate: Tensor, edge_value: Tensor) -> float:
        """Forward every edge and feature (dead ones at value 0), backward the loss; returns it."""
        loss = loss_fn(self.model(self._all_features.gated(gate), MaskedGraph(self._all_edges, edge_value)))
        loss.backward()
        return float(loss.detach())

    def needs_probe(self, regrow_fraction: float) -> bool:
        """Whether :meth:`update` needs a :meth:`probe`: to regrow, or to score fixed (unlearned) edges."""
        return regrow_fraction > 0 or self.edge_logit is None

    def update(self, sparsity: PruneTargets, regrow_fraction: float = 0.0, probe: ProbeResult | None = None,
               optimizer: torch.optim.Optimizer | None = None,
               prune_scores: Mapping[str, Tensor] | None = None,
               edge_ranking: EdgeRanking = EdgeRanking.LOCAL,
               feature_score: FeatureScore = FeatureScore.CONTRIBUTION) -> dict[str, dict[str, int]]:
        """Prune every part to ``sparsity`` and swap ``regrow_fraction`` of it (see :func:`prune_and_regrow`).

        Order: features, edges, weights (input weights depend on the kept features).
        Default scores: live features by ``feature_score`` (``|gate| * ||weight row||``, times the
        column's L1 mass for :attr:`FeatureScore.CONTRIBUTION`), dead ones by
        ``probe.feature_grad``; live edges by their effective weight ``sigmoid(logit)`` (by
        ``|grad|`` when not learned; compared per endpoint for :attr:`EdgeRanking.LOCAL`), dead
        ones by the descent score ``-d loss / d weight``;
        live weights by magnitude, dead ones by gradient magnitude (RigL); in unit mode whole
        hidden units by the L2 norm of their weights (:meth:`_update_units`). Revived gates
        restart at their initial value, revived weights at zero; their optimizer state is reset.

        Args:
            sparsity: target sparsity of each part.
            regrow_fraction: fraction of live entries swapped for dead ones; needs ``probe`` if > 0.
            probe: gradients at the current point (:meth:`probe`), which score dead entries.
            optimizer: whose state of revived entries is reset.
            prune_scores: optional per-site importance of live entries (site name -> tensor shaped
                like the site's mask; low is pruned first), replacing the default for that site.
                Weight rows of pruned features are always pruned first.
            edge_ranking: compare live edge scores per endpoint (default, as CGP) or over the
                whole graph (:class:`EdgeRanking`; applies to ``prune_scores[EDGES]`` too).
            feature_score: the default score of live feature columns (:class:`FeatureScore`;
                default: their contribution, as CGP).

        Returns:
            per site: how many entries were pruned, swapped out and grown.
        """
        if probe is None and regrow_fraction > 0:
            raise ValueError("regrowth needs a probe (gradients of the dead entries)")
        report = self._update_masks(sparsity, regrow_fraction, probe, optimizer, prune_scores, edge_ranking,
                                    feature_score)
        self.refresh()
        return report

    def would_pick(self, sparsity: PruneTargets, prune_scores: Mapping[str, Tensor] | None = None,
                   edge_ranking: EdgeRanking = EdgeRanking.LOCAL,
                   feature_score: FeatureScore = FeatureScore.CONTRIBUTION) -> dict[str, Tensor]:
        """The keep-masks :meth:`update` (no regrowth, same arguments) would set now, per part;
        nothing changes.

        Returns:
            ``weights`` (every weight site's mask, flattened and concatenated in site order;
            unit sites in unit mode), ``edges`` ``[E]`` and ``features`` ``[F]``, all bool.
        """
        picked = self.pick_engine(sparsity, prune_scores, edge_ranking, feature_score)
        live, self.engine = self.engine, picked
        try:
            return self.part_masks()
        finally:
            self.engine = live

    def pick_engine(self, sparsity: PruneTargets, prune_scores: Mapping[str, Tensor] | None = None,
                    edge_ranking: EdgeRanking = EdgeRanking.LOCAL,
                    feature_score: FeatureScore = FeatureScore.CONTRIBUTION) -> MaskEngine:
        """A copy of the mask engine as :meth:`update` (no regrowth, same arguments) would leave
        it now, site by site; nothing changes."""
        live = self.engine
        self.engine = MaskEngine.from_state_dict(live.state_dict())
        try:
            self._update_masks(sparsity, 0.0, None, None, prune_scores, edge_ranking, feature_score)
            return self.engine
        finally:
            self.engine = live

    def part_masks(self) -> dict[str, Tensor]:
        """The current keep-masks per part, laid out as :meth:`would_pick` returns them (copies)."""
        weights = [site.mask.reshape(-1) for site in self.engine if site.kind in (SiteKind.WEIGHT, SiteKind.UNIT)]
        return {"weights": torch.cat(weights) if weights else torch.zeros(0, dtype=torch.bool),
                "edges": self.engine.mask(EDGES).clone(), "features": self.engine.mask(FEATURES).clone()}

    def _update_masks(self, sparsity, regrow_fraction, probe, optimizer, prune_scores, edge_ranking,
                      feature_score) -> dict[str, dict[str, int]]:
        """:meth:`update` on the engine's masks (and revived entries' values), without :meth:`refresh`."""
        scores = dict(prune_scores or {})
        report: dict[str, dict[str, int]] = {}
        feature_scores = scores.get(FEATURES)
        if feature_scores is None:
            feature_scores = (self.feature_contribution() if FeatureScore(feature_score) is FeatureScore.CONTRIBUTION
                              else self.feature_magnitude())
        report[FEATURES] = self._update_features(sparsity.features, regrow_fraction, probe, optimizer,
                                                 feature_scores).as_dict()
        report[EDGES] = self._update_edges(sparsity.edges, regrow_fraction, probe, optimizer,
                                           scores.get(EDGES), EdgeRanking(edge_ranking)).as_dict()
        if self.granularity is WeightGranularity.UNIT:
            report.update(self._update_units(sparsity.weights, regrow_fraction, probe, optimizer, scores))
        else:
            report.update(self._update_weights(sparsity.weights, regrow_fraction, probe, optimizer, scores))
        return report

    def _update_weights(self, sparsity, regrow_fraction, probe, optimizer, scores) -> dict[str, dict[str, int]]:
        """Element mode: every weight site by magnitude, regrown by gradient magnitude at zero."""
        report = {}
        feature_rows = self.engine.mask(FEATURES)
        views, live_scores, eligible = {}, {}, {}
        for name, param in self.weights.items():
            site = WEIGHT_PREFIX + name
            grad = None if probe is None else probe.weight_grads[name].detach()
            views[name] = view = SiteView(mask=self.engine.mask(site), values=param.detach(), grad=grad)
            given = scores.get(site)
            live_scores[name] = magnitude(view) if given is None else given.reshape(view.mask.shape)
            eligible[name] = None
            if name in self.model.input_weight_names:
                rows = _along(feature_rows, param, self.layouts[name].input_axis).expand_as(param)
                live_scores[name] = torch.where(rows, live_scores[name], torch.tensor(-float("inf")))
                eligible[name] = rows
        weight_sparsity = self.weight_sparsities(sparsity, live_scores)
        for name, param in self.weights.items():
            site, view = WEIGHT_PREFIX + name, views[name]
            grow_scores = _no_scores(view.mask) if probe is None else gradient_magnitude(view)
            update = prune_and_regrow(self.engine, site, weight_sparsity[name], regrow_fraction,
                                      live_scores[name], grow_scores, eligible[name])
            with torch.no_grad():
                self._reset_entries(param, self._revived(site, update.grown, param), 0.0,
                                    optimizer)
            report[site] = update.as_dict()
        return report

    def _update_units(self, sparsity, regrow_fraction, probe, optimizer, scores) -> dict[str, dict[str, int]]:
        """Unit mode: every unit group to ``sparsity`` (fraction of its units).

        Live units are scored by :meth:`unit_norms` of their values, dead ones by that of their
        probe gradients. A dead unit is zero in every slice, producer and consumer alike, so
        its gradient is zero too (a unit needs both ends to pass a signal): dead units of a
        group tie, and regrowth revives the lowest-numbered. A regrown unit starts from
        :func:`regrown_value` of each slice's role (fresh Glorot columns where it is
        produced, zero where it is read): nothing reads it yet, so the model's output is
        unchanged at regrowth (but for the statistics of a norm layer it re-enters, as in
        ResGCN), and the next steps train both ends.
        """
        if sparsity > 0 and not self.unit_groups:
            raise ValueError(f"{type(self.model).__name__} has no hidden units: unit pruning cannot remove "
                             "weights (use element granularity)")
        report = {}
        values = {name: p.detach() for name, p in self.masked_params.items()}
        for group_name, group in self.unit_groups.items():
            site = UNIT_PREFIX + group_name
            live_scores = scores.get(site)
            live_scores = self.unit_norms(group, values) if live_scores is None else live_scores.reshape(group.size)
            grow_scores = torch.zeros(group.size) if probe is None else self.unit_norms(group, probe.weight_grads)
            update = prune_and_regrow(self.engine, site, sparsity, regrow_fraction, live_scores, grow_scores)
            with torch.no_grad():
                self._revive_units(group, update.grown, optimizer)
            report[site] = update.as_dict()
        return report

    @staticmethod
    def unit_norms(group: UnitGroup, tensors: Mapping[str, Tensor]) -> Tensor:
        """``[units]``: the L2 norm of each unit's entries over all slices of ``group``.

        .. math:: s_u = \\Big(\\sum_{(P, \\text{dims}) \\in \\text{group}} \\|P[u]\\|_2^2\\Big)^{1/2}

        where :math:`P[u]` is the slice of unit :math:`u` (a column, a row, a bias entry ...).

        Args:
            group: the unit group.
            tensors: parameter name -> tensor shaped like that parameter (values or gradients).
        """
        total = torch.zeros(group.size)
        for piece in group.slices:
            t = tensors[piece.param].detach()
            front = tuple(range(len(piece.dims)))
            total += t.movedim(piece.dims, front).reshape(group.size, -1).square().sum(1).to(total.dtype)
        return total.sqrt()

    def _revive_units(self, group: UnitGroup, grown: Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        if grown.numel() == 0:
            return
        units = torch.zeros(group.size, dtype=torch.bool)
        units[grown] = True
        for piece in sorted(group.slices, key=lambda piece: piece.role is not UnitRole.PRODUCER):  # reads win
            param = self.masked_params[piece.param]
            self._reset_entries(param, _unit_view(units, piece, param.shape), regrown_value(piece.role, param),
                                optimizer)

    def weight_sparsities(self, overall: float, live_scores: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """Per-weight sparsity that puts all weights together at ``overall`` (see :attr:`distribution`);
        in unit mode, per unit group (each at ``overall``).

        Args:
            overall: sparsity of all weights together.
            live_scores: weight name -> importance of each entry (low goes first), which sets the
                counts of :attr:`WeightDistribution.GLOBAL` (default: magnitude); dead entries
                never count as kept.
        """
        if self.granularity is WeightGranularity.UNIT:
            return {name: overall for name in self.unit_groups}
        if self.distribution is WeightDistribution.UNIFORM:
            return {name: overall for name in self.weights}
        sizes = {name: self.engine.site(WEIGHT_PREFIX + name).numel for name in self.weights}
        if self.distribution is WeightDistribution.GLOBAL:
            live_scores = live_scores or {name: p.detach().abs() for name, p in self.weights.items()}
            candidates = {name: torch.where(self.engine.mask(WEIGHT_PREFIX + name), live_scores[name].detach(),
                                            torch.tensor(-float("inf"))) for name in self.weights}
            kept = kept_by_global_rank(candidates, overall)
        else:
            kept = kept_per_tensor({name: tuple(p.shape) for name, p in self.weights.items()}, overall,
                                   self.distribution, sizes)
        return {name: 1.0 - kept[name] / sizes[name] for name in self.weights}

    def feature_magnitude(self) -> Tensor:
        """``[F]``: :math:`|g_f| \\, \\|W_{f,:}\\|` summed over the weights that read features."""
        row_norm = torch.zeros(self.node_features.num_features)
        for name in self.model.input_weight_names:
            row_norm += _slices(self.weights[name].detach(), self.layouts[name].input_axis).norm(dim=1)
        return row_norm if self.feature_gate is None else self.feature_gate.detach().abs() * row_norm

    def feature_contribution(self) -> Tensor:
        """``[F]``: how much each feature column puts into the first layer, over all nodes.

        .. math::
            c_f = \\sum_i \\big\\| x_{if}\\, g_f\\, W_{f,:} \\big\\|
                = \\|x_{:,f}\\|_1 \\, |g_f| \\, \\|W_{f,:}\\|

        :meth:`feature_magnitude` weighted by the column's mass: a feature that few nodes have
        contributes little whatever its weights, and a frequent one with a modest weight row
        moves many nodes (the feature-column analogue of Wanda's ``|W| * ||X||``). The weights
        are fitted to the labelled nodes, so their magnitudes alone undervalue features that
        are frequent elsewhere in the graph.
        """
        return self.node_features.column_l1 * self.feature_magnitude()

    def _update_features(self, sparsity, regrow_fraction, probe, optimizer, live_scores) -> SiteUpdate:
        mask = self.engine.mask(FEATURES)
        grow_scores = _no_scores(mask) if probe is None else probe.feature_grad
        update = prune_and_regrow(self.engine, FEATURES, sparsity, regrow_fraction, live_scores, grow_scores)
        if self.feature_gate is not None:
            with torch.no_grad():
                self._reset_entries(self.feature_gate, self._revived(FEATURES, update.grown, self.feature_gate), 1.0, optimizer)
        return update

    def _update_edges(self, sparsity, regrow_fraction, probe, optimizer, live_scores,
                      ranking: EdgeRanking) -> SiteUpdate:
        mask = self.engine.mask(EDGES)
        values = self.edge_weight() if self.edge_logit is not None else torch.ones(self.edge_set.num_edges)
        view = SiteView(mask=mask, values=values.detach(), grad=None if probe is None else probe.edge_grad)
        if live_scores is None:
            if self.edge_logit is None and probe is None:
                raise ValueError("fixed edges are scored by their gradient: pass a probe or prune_scores")
            live_scores = view.values if self.edge_logit is not None else gradient_magnitude(view)
        if ranking is EdgeRanking.LOCAL:
            live_scores = endpoint_rank(self.edge_set.edges, self.edge_set.num_nodes, live_scores.reshape(-1), mask)
        grow_scores = _no_scores(mask) if probe is None else descent(view)
        update = prune_and_regrow(self.engine, EDGES, sparsity, regrow_fraction, live_scores, grow_scores)
        if self.edge_logit is not None:
            with torch.no_grad():
                self._reset_entries(self.edge_logit, self._revived(EDGES, update.grown, self.edge_logit), self.edge_init_logit, optimizer)
        return update

    @staticmethod
    def _reset_entries(param: Tensor, revived: Tensor, value: float | Tensor,
                       optimizer: torch.optim.Optimizer | None) -> None:
        """Set revived entries (bool mask shaped like ``param``) to ``value`` (a number, or a tensor
        shaped like ``param`` to take them from); clear their optimizer state."""
        if not bool(revived.any()):
            return
        param[revived] = value[revived] if torch.is_tensor(value) else value
        if optimizer is None or param not in optimizer.state:
            return
        for state in optimizer.state[param].values():
            if torch.is_tensor(state) and state.shape == param.shape:
                state[revived] = 0

    def _revived(self, site: str, grown: Tensor, like: Tensor) -> Tensor:
        """Bool mask shaped like ``like`` of the ``grown`` entries."""
        mask = torch.zeros_like(self.engine.mask(site))
        mask.view(-1)[grown] = True
        return mask.view_as(like)

    # persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"masks": self.engine.state_dict()}
        if self.edge_logit is not None:
            state["edge_logit"] = self.edge_logit.detach().clone()
        if self.feature_gate is not None:
            state["feature_gate"] = self.feature_gate.detach().clone()
        return state

    def state_keys(self) -> set[str]:
        """The keys of :meth:`state_dict`: ``masks``, plus ``edge_logit`` / ``feature_gate`` when learned."""
        return {"masks"} | {name for name, gate in (("edge_logit", self.edge_logit),
                                                    ("feature_gate", self.feature_gate)) if gate is not None}

    def load_state_dict(self, state: dict) -> None:
        """Restore masks and gates; any missing, unexpected or misshapen entry raises :class:`PrunerStateError`.

        Strict on purpose: a pruner built with other settings (say without learned edge
        weights) must not drop a saved ``edge_logit`` and compute something else.
        """
        check_pruner_state(self, state)
        self.engine.load_state_dict(state["masks"])
        with torch.no_grad():
            if self.edge_logit is not None:
                self.edge_logit.copy_(state["edge_logit"])
            if self.feature_gate is not None:
                self.feature_gate.copy_(state["feature_gate"])
        self.refresh()


def regrown_value(role: UnitRole, param: Tensor) -> float | Tensor:
    """What a regrown unit's entries of ``param`` start from, by their role.

    Producers (``[in, out]`` weights, the unit's column) are drawn afresh, Glorot uniform
    :math:`\\mathcal{U}(-b, b)`, :math:`b = \\sqrt{6 / (n_{in} + n_{out})}` as at
    initialisation: a unit needs a non-zero input side to get any gradient. Consumers and
    biases start at 0 (so the model's output does not change), norm scales at 1.
    """
    if role is UnitRole.PRODUCER:
        bound = math.sqrt(6.0 / (param.shape[0] + param.shape[-1]))
        return torch.empty(param.shape, dtype=param.dtype).uniform_(-bound, bound)
    return _REGROWN_CONSTANT[role]


_REGROWN_CONSTANT = {UnitRole.BIAS: 0.0, UnitRole.SHIFT: 0.0, UnitRole.CONSUMER: 0.0, UnitRole.SCALE: 1.0}


def _unit_view(units: Tensor, piece: UnitSlice, shape: torch.Size) -> Tensor:
    """``[units]`` values laid over ``piece``'s axes of a tensor of ``shape`` (broadcast over the rest)."""
    first, last = piece.dims[0], piece.dims[-1]
    view = [1] * first + [shape[d] for d in piece.dims] + [1] * (len(shape) - last - 1)
    return units.reshape(view).expand(shape)


class PrunerStateError(ValueError):
    """A saved pruner state does not fit the pruner (the message names the key)."""


def check_pruner_state(pruner: CoPruner, state) -> None:
    """Raise :class:`PrunerStateError` naming the first key of ``state`` that does not fit ``pruner``."""
    if not isinstance(state, Mapping):
        raise PrunerStateError(f"expected a dict of masks and gates, got {type(state).__name__}")
    _check_keys(set(state), pruner.state_keys(), "")
    masks = state["masks"]
    if not isinstance(masks, Mapping):
        raise PrunerStateError(f"key 'masks' holds {type(masks).__name__}, not a dict of sites")
    _check_keys(set(masks), {site.name for site in pruner.engine}, "masks.")
    for site in pruner.engine:
        entry = masks[site.name]
        if not isinstance(entry, Mapping) or not torch.is_tensor(entry.get("mask")):
            raise PrunerStateError(f"key 'masks.{site.name}' has no 'mask' tensor")
        if tuple(entry["mask"].shape) != tuple(site.mask.shape) or entry["mask"].dtype != torch.bool:
            raise PrunerStateError(f"key 'masks.{site.name}.mask' is {entry['mask'].dtype} "
                                   f"{list(entry['mask'].shape)}, expected torch.bool {list(site.mask.shape)}")
        if entry.get("kind") != site.kind.value:
            raise PrunerStateError(f"key 'masks.{site.name}.kind' is {entry.get('kind')!r}, expected {site.kind.value!r}")
    for name in ("edge_logit", "feature_gate"):
        gate = getattr(pruner, name)
        if gate is not None and (not torch.is_tensor(state[name]) or state[name].shape != gate.shape):
            got = list(state[name].shape) if torch.is_tensor(state[name]) else type(state[name]).__name__
            raise PrunerStateError(f"key '{name}' is {got}, expected a tensor of shape {list(gate.shape)}")


def _check_keys(found: set[str], expected: set[str], prefix: str) -> None:
    for kind, keys in (("missing", sorted(expected - found)), ("unexpected", sorted(found - expected))):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise PrunerStateError(f"{kind} key '{prefix}{keys[0]}'{more}")
def _along(vector: Tensor, like: Tensor, axis: int) -> Tensor:
    """``vector`` viewed to broadcast along ``axis`` of ``like`` (size 1 on every other axis)."""
    shape = [1] * like.dim()
    shape[axis] = -1
    return vector.view(shape)


def _slices(tensor: Tensor, axis: int) -> Tensor:
    """``[tensor.size(axis), rest]``: one row per index along ``axis`` (e.g. per input feature)."""
    return tensor.movedim(axis, 0).reshape(tensor.size(axis), -1)


def _no_scores(mask: Tensor) -> Tensor:
    """Placeholder grow scores when nothing regrows."""
    return torch.zeros(mask.shape)

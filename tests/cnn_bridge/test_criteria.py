"""Known answers of the filter criteria on tiny hand-built layers."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_bridge.criteria import CRITERIA, LayerView, central, chip, clp, clp_flagged, entropy, fsm, get_criterion, hrank, l1
from cnn_bridge.criteria.central import compensate, eliminate, similarity
from cnn_bridge.criteria.fsm import expected_relu
from cnn_bridge.criteria.sensitivity import fractions_within


def view_of(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, consumers=()) -> LayerView:
    conv.eval(), bn.eval()
    with torch.no_grad():
        features = F.relu(bn(conv(x)))
    return LayerView("layer", conv, bn, tuple(consumers), features)


def zero_channel_layer(zero: int = 2) -> LayerView:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[zero] = 0
    return view_of(conv, nn.BatchNorm2d(6), torch.randn(32, 3, 8, 8))


def duplicate_layer() -> tuple[LayerView, torch.Tensor]:
    """Three inputs on disjoint rows of the image; a 1x1 conv copies them to channels 0, 1, 2 and
    copies input 1 again to channel 3 (the duplicate of channel 1)."""
    torch.manual_seed(0)
    x = torch.zeros(16, 3, 6, 6)
    for c in range(3):
        x[:, c, 2 * c:2 * c + 2] = torch.rand(16, 2, 6) + 0.5
    conv = nn.Conv2d(3, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for out, source in enumerate((0, 1, 2, 1)):
            conv.weight[out, source] = 1.0
    consumer = nn.Conv2d(4, 2, 3, padding=1)
    return view_of(conv, nn.BatchNorm2d(4), x, [consumer]), x


@pytest.mark.parametrize("criterion", [l1, hrank, entropy])
def test_zero_channel_scores_lowest(criterion):
    scores = criterion(zero_channel_layer(zero=2))
    assert scores.shape == (6,)
    others = torch.cat([scores[:2], scores[3:]])
    assert scores[2] < others.min()


@pytest.mark.parametrize("criterion", [chip, central])
def test_duplicate_channel_is_removed_first(criterion):
    view, _ = duplicate_layer()
    assert int(criterion(view).argmin()) in (1, 3)


def test_central_drops_the_later_duplicate_and_ranks_all():
    view, _ = duplicate_layer()
    # 3 (the later copy of 1) first; then of the pair (0, 2), 2 is less central by about 2e-4;
    # then 0 and 1 are equally central and the later one goes
    assert central(view).tolist() == [3.0, 2.0, 1.0, 0.0]


def _two_copies(rounding: float) -> torch.Tensor:
    """Similarity of four channels where 3 is a copy of 1, with channel 1's similarity to 0 moved by
    ``rounding``: what summing the same numbers in another order does to one centrality. The
    other entries are dyadic, so every sum of them is exact in any order."""
    sim = torch.tensor([[1.0, -0.375, 0.125, -0.375],
                        [-0.375, 1.0, 0.25, 1.0],
                        [0.125, 0.25, 1.0, 0.25],
                        [-0.375, 1.0, 0.25, 1.0]], dtype=torch.float64)
    sim[0, 1] = sim[1, 0] = -0.375 + rounding
    return sim


@pytest.mark.parametrize("rounding", [-1e-15, 0.0, 1e-15])
def test_central_drops_the_later_copy_whichever_way_rounding_leans(rounding):
    sim = _two_copies(rounding)
    centrality = sim.clone().fill_diagonal_(0).sum(1)
    # channel 1 is less central, as central as, or more central than its copy 3 in float64
    assert torch.sign(centrality[1] - centrality[3]) == math.copysign(1.0, rounding) * (rounding != 0)
    scores = eliminate(sim)
    assert scores[3] == 0 and scores[1] > 0  # the later copy goes first every time


@pytest.mark.parametrize("rounding", [-1e-15, 1e-15])
def test_central_takes_the_first_of_two_pairs_tied_up_to_rounding(rounding):
    # two pairs of copies, (0, 2) and (1, 3); the similarity of the later pair is moved by rounding
    sim = torch.full((4, 4), 0.1, dtype=torch.float64)
    sim[0, 2] = sim[2, 0] = 1.0
    sim[1, 3] = sim[3, 1] = 1.0 + rounding
    scores = eliminate(sim)
    assert scores[2] == 0 and scores[3] == 1  # (0, 2) first whichever way rounding leans; later copies go


def test_similarity_is_scale_free_and_zero_only_for_constant_channels():
    torch.manual_seed(0)
    features = torch.rand(4, 3, 5, 5)
    features[:, 1] = features[:, 0] * 1e-14  # a faint copy is still a copy
    features[:, 2] = 3.7
    sim = similarity(features)
    assert sim[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert sim[2].abs().sum() == 0 and sim[:, 2].abs().sum() == 0
    assert torch.equal(sim, sim.T)


def test_central_compensation_keeps_next_layer_output():
    view, _ = duplicate_layer()
    consumer = view.consumers[0]
    untouched = copy.deepcopy(consumer)
    before = consumer(view.features)
    keep = torch.tensor([True, True, True, False])
    masked = view.features * keep.view(1, -1, 1, 1)
    compensate(view, keep)
    assert torch.allclose(consumer(masked), before, atol=1e-5)
    assert not torch.allclose(untouched(masked), before, atol=1e-3)  # removal alone changes it


def test_central_compensation_folds_into_the_first_of_tied_kept_copies():
    torch.manual_seed(0)
    x = torch.rand(8, 2, 5, 5) + 0.5
    conv = nn.Conv2d(2, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for out, source in enumerate((0, 0, 0, 1)):  # channels 0, 1, 2 are copies
            conv.weight[out, source] = 1.0
    view = view_of(conv, nn.BatchNorm2d(4), x, [nn.Conv2d(4, 3, 1)])
    w = view.consumers[0].weight.detach().clone()
    compensate(view, torch.tensor([True, True, False, True]))
    after = view.consumers[0].weight.detach()
    assert torch.allclose(after[:, 0], w[:, 0] + w[:, 2], atol=1e-6)  # into 0, the lower of two tied copies
    assert torch.equal(after[:, 1], w[:, 1]) and torch.equal(after[:, 3], w[:, 3])


def test_clp_flags_the_scaled_channel():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[5] *= 100
    view = LayerView("layer", conv.eval(), nn.BatchNorm2d(16).eval())
    assert clp_flagged(view).nonzero().view(-1).tolist() == [5]
    assert int(clp(view).argmin()) == 5


def test_clp_folds_batch_norm_scale():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 16, 3, bias=False), nn.BatchNorm2d(16).eval()
    with torch.no_grad():
        bn.weight[7] = 100.0
    assert clp_flagged(LayerView("layer", conv, bn)).nonzero().view(-1).tolist() == [7]


def test_fsm_scores_unused_channel_zero():
    torch.manual_seed(0)
    conv, bn, nxt = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4).eval(), nn.Conv2d(4, 5, 3)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -0.2, 0.1, 1.0]))
        nxt.weight[:, 1] = 0
    scores = fsm(LayerView("layer", conv, bn, (nxt,)))
    assert scores[1] == 0 and (scores[[0, 2, 3]] > 0).all()


def test_expected_relu_of_standard_normal():
    assert math.isclose(float(expected_relu(torch.tensor(0.0), torch.tensor(1.0))), 1 / math.sqrt(2 * math.pi),
                        rel_tol=1e-6)
    assert math.isclose(float(expected_relu(torch.tensor(3.0), torch.tensor(1e-9))), 3.0, rel_tol=1e-6)


def test_sensitivity_fractions_within_tolerance():
    drops = {"a": [0.0, 0.01, 0.2], "b": [0.05, 0.3, 0.5]}
    assert fractions_within(drops, [0.25, 0.5, 0.75], 0.02) == {"a": 0.5, "b": 0.0}


def test_data_driven_criterion_without_features_says_so():
    view = LayerView("conv7", nn.Conv2d(2, 3, 1))
    with pytest.raises(ValueError, match="conv7"):
        chip(view)


def test_unknown_criterion_names_the_choices():
    with pytest.raises(ValueError, match="l1, hrank"):
        get_criterion("magic")
    assert set(CRITERIA) == {"l1", "hrank", "chip", "central", "clp", "fsm", "entropy", "sensitivity", "cap"}

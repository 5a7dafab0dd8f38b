"""ASCP: merging identical conv + BN filters keeps the next layer's output, the clustering and the
rate schedule on hand-built cases."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_bridge.ascp import (ASCPConfig, SoftClusterPruning, cluster_filters, merge_clusters, pruned_schedule,
                             reconstruct)
from cnn_bridge.channel_masks import ChannelMasks, channel_engine
from cnn_bridge.compact import PrunableLayer


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(F.relu(self.bn1(self.conv1(x))))


LAYER = PrunableLayer("conv1", "bn1", ("conv2",))


def _two_convs_with_duplicate() -> TwoConvs:
    torch.manual_seed(0)
    model = TwoConvs().eval()
    with torch.no_grad():
        bn = model.bn1
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        for tensor in (model.conv1.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var):
            tensor[2] = tensor[0]  # filter 2 computes exactly filter 0's channel
    return model


def test_merging_identical_filters_keeps_next_layer_output():
    model = _two_convs_with_duplicate()
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        before = model(x)
    keep = merge_clusters(model, LAYER, torch.tensor([0, 1, 0, 3]))
    assert keep.tolist() == [True, True, False, True]
    ChannelMasks(channel_engine(model, [LAYER], {"conv1": keep}), model, [LAYER]).apply()
    with torch.no_grad():
        after = model(x)
        assert torch.equal(F.relu(model.bn1(model.conv1(x)))[:, 2], torch.zeros(3, 6, 6))  # the merged-away channel is dead
    assert (after - before).abs().max() <= 1e-6
    assert before.abs().max() > 0.1


def test_merge_without_identical_filters_changes_the_output():
    """The known answer above is not vacuous: merging two different filters does change the output."""
    model = _two_convs_with_duplicate()
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        before = model(x)
    keep = merge_clusters(model, LAYER, torch.tensor([0, 1, 2, 1]))
    ChannelMasks(channel_engine(model, [LAYER], {"conv1": keep}), model, [LAYER]).apply()
    with torch.no_grad():
        assert (model(x) - before).abs().max() > 1e-3


def test_reconstruct_makes_members_identical():
    model = _two_convs_with_duplicate()
    reconstruct(model, LAYER, torch.tensor([0, 1, 1, 3]))
    bn = model.bn1
    for tensor in (model.conv1.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var):
        assert torch.equal(tensor[1], tensor[2])
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        out = bn(model.conv1(x))
    assert torch.equal(out[:, 1], out[:, 2])


def test_centroid_linkage_on_hand_built_points():
    points = torch.tensor([[0.0], [10.0], [0.1], [10.2], [5.0]])
    # joins (0, 2) at 0.1, then (1, 3) at 0.2; centroid 0.05 is 4.95 from 5.0, centroid 10.1 is 5.1
    assert cluster_filters(points, 3).tolist() == [0, 1, 0, 1, 4]
    assert cluster_filters(points, 2).tolist() == [0, 1, 0, 1, 0]
    assert cluster_filters(points, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        cluster_filters(points, 0)


def test_identical_filters_share_a_cluster():
    torch.manual_seed(1)
    vectors = torch.randn(6, 9)
    vectors[4] = vectors[1]
    labels = cluster_filters(vectors, 5)
    assert labels[4] == labels[1] == 1
    assert len(labels.unique()) == 5


def test_rate_schedule():
    # shares (1 - d^k) / (1 - d^K) at d = 0.5, K = 3: 4/7, 6/7, 1
    assert pruned_schedule(10, 3, 0.5) == [5, 8, 10]
    assert pruned_schedule(10, 3, 1.0) == [3, 6, 10]
    increments = [b - a for a, b in zip([0] + pruned_schedule(64, 8, 0.7), pruned_schedule(64, 8, 0.7))]
    assert increments[0] > increments[-1]
    with pytest.raises(ValueError):
        ASCPConfig(decay=0.0)


def test_soft_cluster_pruning_events_and_tied_phase():
    model = _two_convs_with_duplicate().train()
    soft = SoftClusterPruning(model, [LAYER], {"conv1": 2}, total_steps=8,
                              config=ASCPConfig(reconstructions=2, decay=1.0, tied_fraction=0.5))
    assert soft.event_steps == [2, 4]
    soft(2)
    assert len(soft.labels["conv1"].unique()) == 3
    soft(4)
    assert len(soft.labels["conv1"].unique()) == 2
    with torch.no_grad():
        model.conv1.weight.add_(torch.randn_like(model.conv1.weight))  # a training step moves the members apart
    soft(5)  # tied phase: reconstructed again
    labels = soft.labels["conv1"]
    for cluster in labels.unique():
        members = (labels == cluster).nonzero().view(-1)
        assert all(torch.equal(model.conv1.weight[members[0]], model.conv1.weight[m]) for m in members)
    keep = soft.finish()
    assert int(keep["conv1"].sum()) == 2

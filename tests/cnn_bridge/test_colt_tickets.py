"""COLT for CNNs: the intersection of known masks, rewinding, exact counts on digits."""
import pytest
import torch
from torch import nn

from cnn_bridge.colt_tickets import (LogitSubset, TicketRounds, _merge, colt_ticket, element_engine, image_class_halves,
                                     images_of_classes, imp_ticket, rewind_masked)
from cnn_bridge.data import load_digits
from cnn_bridge.models import DigitsConvNet
from cnn_bridge.train import CNNTrainConfig
from gnnprune.masks import kept_count

T, F = True, False


def _pair():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))


def test_intersection_of_two_known_masks_topped_up_by_the_mean_score():
    model = _pair()
    engine = element_engine(model)
    # copy 0 keeps {0, 1, 2} of layer 0 (6 entries), copy 1 keeps {1, 2, 5}: both keep {1, 2};
    # the level keeps 3, so one entry is topped up: the largest mean of the rest, entry 5 (2.0 > 1.0)
    a = torch.tensor([[2.0, 8.0, 7.0], [0.0, 0.0, 1.0]])
    b = torch.tensor([[0.0, 8.0, 7.0], [0.0, 0.0, 3.0]])
    head = {"2.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    report = _merge(engine, [{"0.weight": a, **head}, {"0.weight": b, **head}], 0.5, "2.weight",
                    owner=torch.tensor([0, 1]))
    assert engine.mask("0.weight").tolist() == [[F, T, T], [F, F, T]]
    assert report["0.weight"] == {"start": 6, "intersection": 2, "kept": 3, "topped_up": 1}
    assert engine.mask("2.weight").tolist() == [[F, F], [T, T]]  # the head: each row its owner's scores


def test_the_head_rows_take_their_owners_scores():
    model = _pair()
    engine = element_engine(model)
    layer = {"0.weight": torch.ones(2, 3)}
    owner_0 = {"2.weight": torch.tensor([[5.0, 0.0], [0.0, 0.0]]), **layer}
    owner_1 = {"2.weight": torch.tensor([[0.0, 0.0], [0.0, 6.0]]), **layer}
    _merge(engine, [owner_0, owner_1], 0.5, "2.weight", owner=torch.tensor([0, 1]))
    assert engine.mask("2.weight").tolist() == [[T, F], [F, T]]


def test_rewound_weights_equal_their_initial_values_bit_for_bit():
    model = _pair()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    engine = element_engine(model)
    engine.set_mask("0.weight", torch.tensor([[T, F, T], [F, T, F]]))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0).add_(1.0)
    rewind_masked(model, initial, engine)
    live = engine.mask("0.weight")
    assert torch.equal(model[0].weight.detach()[live], initial["0.weight"][live])
    assert bool((model[0].weight.detach()[~live] == 0).all())
    assert torch.equal(model[2].weight.detach(), initial["2.weight"])


def test_class_halves_of_images():
    data = load_digits().subset(100, 50)
    first, second = image_class_halves(10)
    assert first.tolist() == [0, 1, 2, 3, 4] and second.tolist() == [5, 6, 7, 8, 9]
    half = images_of_classes(data, second)
    assert half.num_classes == 5 and int(half.train_y.min()) == 0 and int(half.train_y.max()) == 4
    assert len(half.train_y) == int((data.train_y >= 5).sum())
    model = DigitsConvNet()
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    assert torch.equal(LogitSubset(model, second)(x), model(x)[:, 5:])


def test_colt_and_imp_end_at_exact_counts_on_digits():
    data = load_digits().subset(300, 100)
    train = CNNTrainConfig(epochs=1, batch_size=50, lr=0.05, augment=False)
    rounds = TicketRounds(sparsity=0.5, rate=0.3, round_train=train, ticket_train=train)
    assert rounds.levels() == pytest.approx([0.3, 0.5]) and rounds.levels()[-1] == 0.5
    record = colt_ticket(lambda: DigitsConvNet(width=4), data, rounds, seed=0, progress=False)
    assert record["epochs"] == 2 * 2 + 1  # two copies in each of two rounds, then the ticket
    for entry in record["rounds"]:
        for name, counts in entry["sites"].items():
            assert counts["kept"] - counts["topped_up"] <= counts["intersection"]
    engine = record["engine"]
    for name, site in engine.items():
        assert int(site["mask"].sum()) == kept_count(site["mask"].numel(), 0.5), name
    baseline = imp_ticket(lambda: DigitsConvNet(width=4), data, rounds, seed=0, progress=False)
    assert baseline["epochs"] == 2 + 1 and baseline["kept"] == record["kept"]

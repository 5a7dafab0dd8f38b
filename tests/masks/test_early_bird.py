"""Early-bird monitor: known-answer mask sequences."""
import io

import pytest
import torch

from gnnprune.masks import EarlyBird, EarlyBirdConfig, decision_distance, mask_distance

T, F = True, False


def _masks(*rows):
    return [torch.tensor(row) for row in rows]


def test_mask_distance_is_the_fraction_of_differing_entries():
    assert mask_distance(torch.tensor([T, T, F, F]), torch.tensor([T, F, F, T])) == 0.5
    assert mask_distance(torch.tensor([[T, F], [F, F]]), torch.tensor([[T, F], [F, F]])) == 0.0
    assert mask_distance(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool)) == 0.0
    with pytest.raises(ValueError, match=r"masks differ in shape: \(3,\) != \(4,\)"):
        mask_distance(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))


# weights settle from epoch 2 on; edges never move
WEIGHTS = _masks([T, T, T, T], [T, T, T, F], [T, T, F, F], [T, T, F, F], [T, T, F, F])
EDGES = torch.tensor([T, T, F, F])


def _run(config, weights=WEIGHTS, edges=None):
    monitor = EarlyBird(config)
    answers = [monitor.observe(epoch, {"weights": w, "edges": EDGES if edges is None else edges[epoch]})
               for epoch, w in enumerate(weights)]
    return monitor, answers


def test_fires_when_the_newest_mask_is_close_to_every_older_one_of_the_window():
    # epoch 2: d(m2, m0) = 0.5 > 0.25, although consecutive masks differ by 0.25 only;
    # epoch 3: d(m3, m1) = 0.25, d(m3, m2) = 0 -> fires
    monitor, answers = _run(EarlyBirdConfig(window=3, threshold=0.25))
    assert answers == [F, F, F, T, T]
    assert monitor.fired_epoch == 3
    assert monitor.distances == [{"epoch": 2, "weights": 0.5, "edges": 0.0},
                                 {"epoch": 3, "weights": 0.25, "edges": 0.0}]


def test_threshold_zero_waits_for_identical_masks_over_the_window():
    monitor, answers = _run(EarlyBirdConfig(window=3, threshold=0.0))
    assert answers == [F, F, F, F, T]
    assert monitor.fired_epoch == 4
    assert monitor.record(dense_epochs=10) == {
        "window": 3, "threshold": 0.0, "min_epochs": 0, "distance": "all entries", "fired_epoch": 4, "dense_epochs": 10, "epochs_saved": 5,
        "distances": [{"epoch": 2, "weights": 0.5, "edges": 0.0}, {"epoch": 3, "weights": 0.25, "edges": 0.0},
                      {"epoch": 4, "weights": 0.0, "edges": 0.0}]}


def test_min_epochs_holds_a_settled_window_until_enough_epochs_have_trained():
    steady = [torch.tensor([T, T, F, F])] * 8
    # settled from epoch 1 on (window 2), but 6 epochs must train first: epoch 5 is the 6th
    monitor, answers = _run(EarlyBirdConfig(window=2, threshold=0.0, min_epochs=6), weights=steady, edges=steady)
    assert answers == [F, F, F, F, F, T, T, T]
    assert monitor.fired_epoch == 5
    assert monitor.record(dense_epochs=8)["epochs_saved"] == 2
    # a floor below the window changes nothing
    assert _run(EarlyBirdConfig(window=3, threshold=0.25, min_epochs=2))[0].fired_epoch == 3


def test_never_fires_while_one_part_keeps_moving():
    steady = [torch.tensor([T, T, F, F])] * 10
    moving = _masks(*([[T, T, F, F], [T, F, T, F]] * 5))
    monitor, answers = _run(EarlyBirdConfig(window=2, threshold=0.25), weights=steady, edges=moving)
    assert not any(answers)
    assert monitor.fired_epoch is None
    assert [d["edges"] for d in monitor.distances] == [0.5] * 9
    assert [d["weights"] for d in monitor.distances] == [0.0] * 9
    assert monitor.record(dense_epochs=10)["epochs_saved"] == 0


def test_parts_must_stay_the_same():
    monitor = EarlyBird(EarlyBirdConfig(window=2))
    monitor.observe(0, {"weights": EDGES})
    with pytest.raises(ValueError, match="parts changed between observations"):
        monitor.observe(1, {"edges": EDGES})


@pytest.mark.parametrize("window, threshold, message", [
    (1, 0.1, "early-bird window must be an integer >= 2, got 1"),
    (2.5, 0.1, "early-bird window must be an integer >= 2, got 2.5"),
    (5, 1.5, r"early-bird threshold must be in \[0, 1\], got 1.5"),
    (5, -0.1, r"early-bird threshold must be in \[0, 1\], got -0.1"),
])
def test_config_is_validated(window, threshold, message):
    with pytest.raises(ValueError, match=message):
        EarlyBirdConfig(window=window, threshold=threshold)


@pytest.mark.parametrize("min_epochs", [-1, 2.0, True])
def test_min_epochs_is_validated(min_epochs):
    with pytest.raises(ValueError, match="early-bird min_epochs must be an integer >= 0"):
        EarlyBirdConfig(min_epochs=min_epochs)


def test_state_round_trip_continues_to_the_same_answer():
    config = EarlyBirdConfig(window=3, threshold=0.25)
    first = EarlyBird(config)
    for epoch in range(2):
        first.observe(epoch, {"weights": WEIGHTS[epoch], "edges": EDGES})
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = EarlyBird(config)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    answers = [second.observe(epoch, {"weights": WEIGHTS[epoch], "edges": EDGES}) for epoch in range(2, 5)]
    assert answers == [F, T, T]
    assert second.fired_epoch == 3


def test_decision_distance_compares_what_two_decisions_prune():
    start = torch.tensor([T, T, T, T, F, F])
    # a prunes {0}, b prunes {1}: disjoint decisions
    assert decision_distance(torch.tensor([F, T, T, T, F, F]), torch.tensor([T, F, T, T, F, F]), start) == 1.0
    # a prunes {0, 1}, b prunes {0, 2}: one of four pruned entries differs on each side
    assert decision_distance(torch.tensor([F, F, T, T, F, F]), torch.tensor([F, T, F, T, F, F]), start) == 0.5
    assert decision_distance(start, start, start) == 0.0
    with pytest.raises(ValueError, match="keeps entries that were already pruned"):
        decision_distance(torch.tensor([T, T, T, T, T, F]), start, start)


# A later round: entries 4..11 were pruned by earlier rounds; the round prunes 2 of the 4 alive.
# Over all 12 entries consecutive masks differ by at most 2/12 < 0.2, so an all-entries monitor
# with threshold 0.2 fires as soon as its window is full; the round's decision (pruned {0, 1},
# {1, 2}, {2, 3}, then {0, 1} on) repeats itself first at epoch 4.
ROUND_START = torch.tensor([T] * 4 + [F] * 8)
ROUND = _masks(*[row + [F] * 8 for row in ([F, F, T, T], [T, F, F, T], [T, T, F, F], [F, F, T, T],
                                             [F, F, T, T], [F, F, T, T])])


def test_a_round_monitor_waits_for_its_own_decision_to_settle():
    loose = EarlyBird(EarlyBirdConfig(window=2, threshold=0.2))
    assert [loose.observe(epoch, {"weights": m}) for epoch, m in enumerate(ROUND)][:2] == [F, T]
    monitor = EarlyBird(EarlyBirdConfig(window=2, threshold=0.2), start={"weights": ROUND_START})
    answers = [monitor.observe(epoch, {"weights": m}) for epoch, m in enumerate(ROUND)]
    assert answers == [F, F, F, F, T, T]
    assert monitor.fired_epoch == 4
    assert [d["weights"] for d in monitor.distances] == [0.5, 0.5, 1.0, 0.0]
    record = monitor.record(dense_epochs=10)
    assert (record["distance"], record["fired_epoch"], record["epochs_saved"]) == ("round decision", 4, 5)

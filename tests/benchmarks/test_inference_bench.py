"""The inference benchmark's pieces: settings, masks at the targets, per-round ratios, acceptance flags."""
import argparse

import pytest
import torch

from benchmarks import inference
from gnnprune.export import compact, kept_graph, max_abs_difference

ARGS = argparse.Namespace(quick=True, threads=2, rounds=3)


def test_settings_parse_and_refuse_bad_ones():
    assert inference.parse_settings("unstructured:0.9/0.5/0.5,structured:0.8/0.2/0") == {
        "unstructured:0.9/0.5/0.5": ("unstructured", 0.9, 0.5, 0.5), "structured:0.8/0.2/0": ("structured", 0.8, 0.2, 0.0)}
    for bad in ("diagonal:0.9/0.5/0.5", "structured:0.9/0.5", "unstructured:1.0/0.5/0.5"):
        with pytest.raises(ValueError, match="bad setting"):
            inference.parse_settings(bad)


@pytest.mark.parametrize("model", inference.MODELS)
def test_masks_at_the_targets_export_exactly(model, small_csbm):
    for structure in ("unstructured", "structured"):
        net, pruner = inference.prune_at(model, small_csbm, (structure, 0.9, 0.5, 0.5))
        assert pruner.kept_edges() == small_csbm.edges.num_edges - round(0.5 * small_csbm.edges.num_edges)
        exported = compact(net, pruner)
        assert max_abs_difference(exported, net, pruner, small_csbm, kept_graph(pruner)) <= 1e-5
        if structure == "structured":
            for name, units in exported.units.items():
                if name != "features":  # 90% of every hidden space removed, none more (biases are 0: silent)
                    assert units["kept"] == units["total"] - round(0.9 * units["total"])


def test_summary_takes_medians_of_per_round_ratios_and_flags_the_targets():
    pair = {"times_s": {"dense": [1.0, 2.0, 1.0], "exported": [0.2, 0.8, 0.25]}, "macs": {"ratio": 0.2},
            "units": {"features": {"total": 4, "kept": 2}}, "kept_edges": 3, "max_abs_diff": 0.0}
    results = {"pair:gcn:structured:0.9/0.5/0.5": pair,
               "memory:gcn:dense": {"peak_rss_mb": 300.0, "before_forward_mb": 200.0}}
    settings = inference.parse_settings("structured:0.9/0.5/0.5")
    row = inference.summarize(results, {}, ["gcn"], settings, ARGS)["rows"][0]
    assert row["time_ratio"] == pytest.approx(0.25)  # rounds: 0.2, 0.4, 0.25
    assert row["within_1.5x_macs_plus_0.05"] and row["gcn_structured_at_most_0.30"]
    assert row["inference_rss_increase_mb"] == {"dense": 100.0, "exported": None}
    assert "| gcn | structured:0.9/0.5/0.5 |" in inference.markdown(inference.summarize(results, {}, ["gcn"], settings, ARGS))

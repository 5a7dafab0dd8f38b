"""The speed benchmark's arithmetic: per-round ratios, update share, whole-run totals, bad task names."""
import argparse
import math

import pytest

from benchmarks import speed

ARGS = argparse.Namespace(quick=True, threads=2, repeats=3)


def _results():
    # Round 2 of the CGP steps runs on a machine twice as slow: a ratio of medians would be
    # skewed by it, the median of per-round ratios is not.
    return {
        "dense_gcn": {"epoch_s": [1.0, 1.0, 1.0]},
        "pyg_gcn": {"epoch_s": [7.0, 7.0, 7.0]},
        "cgp_gcn": {"epoch_s_all_edges": [1.5, 3.0, 1.5], "dense_epoch_s_beside_all_edges": [1.0, 2.0, 1.0],
                    "epoch_s_final_masks": [1.1, 1.1, 2.2], "dense_epoch_s_beside_final_masks": [1.0, 1.0, 2.0],
                    "update_s": [2.0, 2.0], "probe_s": [1.5, 1.5]},
        "cgp_run": {"epochs": 3, "dense_epoch_s": [1.0, 1.0, 2.0], "cgp_epoch_s": [1.5, 1.0, 2.5],
                    "cgp_update_s": [0.5, 0.0, 0.0], "mask_updates": 1},
        "gcn@paired": {"inference_s": {"1.0": [1.0, 2.0, 1.0], "0.2": [0.5, 1.0, 0.5], "0.0": [0.25, 0.5, 0.25]}},
        "propagation@paired": {"propagation_s": {"1.0": [0.4, 0.8, 0.4], "0.2": [0.1, 0.2, 0.1],
                                                 "0.0": [0.02, 0.04, 0.02]}},
        "propagation@1.0": {"propagation_s": [0.3, 0.3, 0.3]},
    }


def test_ratios_are_medians_of_per_round_ratios_plus_the_update_share():
    report = speed.summarize(_results(), ARGS)
    r, m = report["ratios"], report["medians_s"]
    assert r["pyg_over_ours_dense_epoch"] == 7.0
    assert r["cgp_epoch_all_edges_over_dense"] == pytest.approx(1.5 + 2.0 / 10 / 1.0)
    assert r["cgp_epoch_final_masks_over_dense"] == pytest.approx(1.1 + 2.0 / 10 / 1.0)
    assert r["cgp_run_over_dense_run"] == pytest.approx(5.0 / 4.0)
    assert (m["cgp_run_total"], m["dense_run_total"], m["cgp_run_updates_total"]) == (5.0, 4.0, 0.5)
    assert r["gcn_inference_20pct_edges_over_dense"] == 0.5
    assert r["gcn_inference_no_edges_over_dense"] == 0.25
    assert math.isnan(r["gat_inference_20pct_edges_over_dense"])  # not measured: NaN, not an error
    # propagation ratios come from the interleaved task too, not from the stand-alone processes
    assert r["propagation_20pct_edges_over_dense"] == pytest.approx(0.25)
    assert r["propagation_no_edges_over_dense"] == pytest.approx(0.05)
    assert (m["propagation_dense"], m["propagation_standalone_1.0"]) == (0.4, 0.3)


def test_markdown_shows_the_measured_rows():
    text = speed.markdown(speed.summarize(_results(), ARGS))
    assert "| whole CGP run, 3 epochs, 1 mask updates" in text
    assert "1.2500× dense run" in text
    assert "| gcn inference, 20% edges | 0.5000 | 0.5000× dense |" in text
    assert "| propagation (operator @ [N, 64]), 20% edges | 0.1000 | 0.2500× all |" in text


def test_unknown_task_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        speed.main(["--tasks", "gcn@paired,bogus"])
    assert exc.value.code == 2
    assert "unknown task(s) bogus; choose from dense_gcn" in capsys.readouterr().err

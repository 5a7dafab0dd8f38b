"""The criteria benchmark's RM variant: the plain network is pruned to the ResNet's MAC target."""
import argparse

import pytest
import torch

from benchmarks import criteria, layer_pruning
from cnn_bridge.allocation import MacModel, uniform_fraction_for
from cnn_bridge.compact import prunable_layers
from cnn_bridge.counting import count_model
from cnn_bridge.data import load_digits
from cnn_bridge.models import build_cnn_model
from gnnprune.io import safe_torch_load


def test_rm_variant_prunes_the_plain_network_to_the_resnets_macs(tmp_path):
    data = load_digits()
    shape = (1, 8, 8)
    torch.manual_seed(0)
    resnet = build_cnn_model("resnet20", num_classes=10, in_channels=1).eval()
    args = argparse.Namespace(out=tmp_path, calibration_images=32, mac_reduction=0.5, model="resnet20")
    name, path, reduction = criteria.rm_variant(resnet, data, args, seed=0)
    plain = build_cnn_model(name, num_classes=10, in_channels=1)
    plain.load_state_dict(safe_torch_load(path))
    resnet_macs = count_model(resnet, shape)["macs"]["dense"]
    macs = MacModel.of(plain, prunable_layers(plain, shape), shape)
    assert macs.macs() > resnet_macs and 0.5 < reduction < 1
    fraction = uniform_fraction_for(macs, reduction)
    kept = macs.macs(macs.kept_at({conv: fraction for conv in macs.channels}))
    assert 0.4 * resnet_macs < kept <= 0.5 * resnet_macs


def test_summary_rows_split_block_inner_and_all_channels():
    def run(method, accuracy):
        return {"method": method, "kind": "criterion", "seed": 0,
                "accuracy": {"masked_after_finetune": accuracy, "masked_before_finetune": 0.1, "dense": 0.5},
                "counts": {"macs": {"ratio": 0.3, "pruned": 5}, "params": {"ratio": 0.4}}, "macs_kept_of_resnet": 0.5,
                "finetune": {"steps": 10}, "compact_max_abs_diff": 1e-7,
                "latency_s": {"batch_64": {"speedup": 1.5, "compact": 0.01}}}
    rm = "l1" + criteria.RM_SUFFIX
    rows = criteria.summarise([run("l1", 0.4), run(rm, 0.45)], ["l1", rm])
    assert [(r["method"], r["after_mean"], r["macs_ratio"]) for r in rows] == [
        ("l1", 0.4, [0.5]), ("l1 (RM)", 0.45, [0.5])]


def test_rows_name_their_prune_settings():
    from cnn_bridge.prune_flow import Allocation, PruneFlow

    assert criteria.prune_settings("chip") == {"criterion": "chip"}
    assert criteria.prune_settings("chip" + criteria.RM_SUFFIX) == {"criterion": "chip"}
    assert criteria.prune_settings("asc") == {"flow": PruneFlow.ASC}
    assert criteria.prune_settings("snf-l1") == {"criterion": "l1", "allocation": Allocation.SNF}


def test_layer_pruning_benchmark_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "layer-pruning.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        layer_pruning.parse_args(["--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "pass --overwrite" in capsys.readouterr().err

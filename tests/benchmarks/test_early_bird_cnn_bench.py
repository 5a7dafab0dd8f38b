"""The CNN early-bird benchmark: paired runs per seed, the record, resuming."""
import json

from benchmarks import early_bird_cnn

ARGV = ["--dataset", "digits", "--model", "convnet", "--pretrain-epochs", "4", "--finetune-epochs", "1",
        "--batch-size", "64", "--train-subset", "300", "--window", "2", "--threshold", "1", "--seeds", "0"]


def test_runs_with_and_without_the_monitor_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "eb.json"
    argv = [*ARGV, "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert early_bird_cnn.main(argv) == 0
    record = json.loads(out.read_text())
    off, on = record["runs"]
    assert (off["monitor"], on["monitor"]) == ("off", "on")
    # threshold 1 accepts any masks: the monitor fires once its window of 2 is full (epoch 1, 0-based)
    assert (off["pretrain_epochs"], off["fired_epoch"]) == (4, None)
    assert (on["pretrain_epochs"], on["fired_epoch"], on["early_bird"]["epochs_saved"]) == (2, 1, 2)
    assert (off["epochs"], on["epochs"]) == (5, 3)
    assert off["macs"]["pruned"] == on["macs"]["pruned"]  # the same MAC target
    assert record["summary"]["on"]["pretrain_epochs"] == {"mean": 2, "std": 0.0}
    assert "| on | 1 |" in capsys.readouterr().out

    # a rerun trains nothing; an interrupted run is started again from scratch
    calls = []
    real = early_bird_cnn.prune_args
    monkeypatch.setattr(early_bird_cnn, "prune_args", lambda *a: calls.append(a[2]) or real(*a))
    assert early_bird_cnn.main(argv) == 0
    assert calls == []
    metrics = tmp_path / "runs" / "early-bird-on-s0" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "status": "running"}))
    assert early_bird_cnn.main(argv) == 0
    assert calls == ["on"]
    assert json.loads(out.read_text())["runs"][1]["pretrain_epochs"] == 2

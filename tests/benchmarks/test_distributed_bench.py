"""The data-parallel benchmark's bookkeeping: which epochs count as plain, the summary's medians,
the paired layout's step, and its argument checks (the runs themselves need torchrun and minutes)."""
import pytest
import torch

from benchmarks import distributed as bench


def test_plain_epochs_skip_the_first_and_the_update_epochs():
    assert bench.plain_epochs(5) == [2, 4]
    assert bench.plain_epochs(8) == [2, 4, 5, 6, 7]


def _rank(epoch_s, test=0.5):
    return {"epoch_s": epoch_s, "load_s": 1.0, "peak_rss_gb": 2.0, "peak_pss_sampled_gb": 1.5, "test": test}


def test_summary_takes_the_slowest_process_per_epoch():
    runs = {"2x1": [[_rank([9, 5, 1, 7, 2, 4]), _rank([9, 6, 3, 7, 1, 4])]]}
    row = bench.summarize(runs)["2x1"]
    assert row["plain_epoch_s"] == 3  # slowest of each epoch 2, 4, 5: 3, 2, 4 -> median 3
    assert row["probe_epoch_s"] == 6
    assert row["peak_pss_gb_per_process"] == 1.5 and row["test"] == 0.5


class _Run:
    """Just enough of a MiniBatchRun for the paired step: losses are the batch numbers."""

    def __init__(self, batches):
        self.steps = []
        self.pruner = type("P", (), {"batches": lambda _: iter(batches), "batch_inputs": lambda _, b: b,
                                     "batch_graph": lambda _, b: None})()
        self.model = lambda inputs, graph: inputs
        self.optimizer = type("O", (), {"zero_grad": lambda _, set_to_none: None})()

    def train_loss(self, logits, batch):
        return logits

    def step(self, loss):
        self.steps.append(float(loss))
        return float(loss)


def test_the_paired_step_averages_two_batches_per_step():
    run = _Run([torch.tensor(1.0), torch.tensor(3.0), torch.tensor(5.0)])
    assert bench.paired_minibatch_step(run, None) == {"loss": 3.5, "batches": 3}
    assert run.steps == [2.0, 5.0]  # (1 + 3) / 2, then the last batch alone


@pytest.mark.parametrize("argv, message", [
    (["--layouts", "1x2,3x1"], "--layouts takes some of 1x2, 2x1, 1x2-paired, got 1x2,3x1"),
    (["--epochs", "4"], "--epochs must be at least 5, got 4"),
])
def test_bad_arguments_name_the_problem(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main([*argv, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err

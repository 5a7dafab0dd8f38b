"""OGB layout round trips through the real ``PygNodePropPredDataset`` and ``Evaluator``."""
import os
import stat

import pytest
import torch

from gnnprune.data import DataNotFoundError, load_dataset, write_ogb_node_dataset
from gnnprune.data.ogb import load_ogb_folder, ogb_master_meta
from gnnprune.metrics import get_evaluator, mean_ranks


def _arxiv_like(folder):
    """8 nodes, directed citations with one reciprocal pair and one self-citation; 3 classes."""
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 1, 7],
                               [1, 2, 3, 4, 5, 6, 7, 0, 7]])
    x = torch.arange(8 * 4, dtype=torch.float32).view(8, 4) / 7
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    split = {"train": torch.tensor([0, 1, 2, 3]), "valid": torch.tensor([4, 5]), "test": torch.tensor([6, 7])}
    meta = write_ogb_node_dataset(folder, edge_index, y, split, x=x, name="ogbn-arxiv", split_name="time",
                                  node_files={"node_year": torch.arange(2000, 2008).view(-1, 1)}, num_classes=40)
    return meta, x, y


def test_arxiv_layout_round_trip_and_accuracy_evaluator(tmp_path):
    meta, x, y = _arxiv_like(tmp_path / "ogbn_arxiv")
    assert sorted(p.name for p in (tmp_path / "ogbn_arxiv" / "raw").iterdir()) == [
        "edge.csv.gz", "node-feat.csv.gz", "node-label.csv.gz", "node_year.csv.gz", "num-edge-list.csv.gz",
        "num-node-list.csv.gz"]
    data = load_ogb_folder(tmp_path / "ogbn_arxiv", meta, "ogbn-arxiv")
    # made undirected: 1->0 and 0->1 collapse, the self-loop goes
    assert data.edges.edges.tolist() == [[0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]]
    assert torch.equal(data.x, x) and torch.equal(data.y, y)
    assert data.train_mask.nonzero().view(-1).tolist() == [0, 1, 2, 3]
    assert data.val_mask.nonzero().view(-1).tolist() == [4, 5]
    assert data.test_mask.nonzero().view(-1).tolist() == [6, 7]
    assert (data.metric, data.task, data.num_classes) == ("ogb:ogbn-arxiv", "multiclass", 40)
    logits = torch.nn.functional.one_hot(y, 40).float()
    logits[7] = torch.nn.functional.one_hot(torch.tensor(2), 40).float()  # one of two test nodes wrong
    score = get_evaluator(data.metric)
    assert score(logits, data.y, data.test_mask) == 0.5
    assert score(logits, data.y, data.train_mask) == 1.0


def _proteins_like(folder):
    """6 nodes, undirected edges with 8-dim features (stored once, inverse added by ogb), 112 tasks."""
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    edge_attr = torch.arange(5 * 8, dtype=torch.float32).view(5, 8) / 100
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(6, 112, generator=g) < 0.5).long()
    y[4], y[5] = 0, 1  # both classes present in every task of the test split
    split = {"train": torch.tensor([0, 1]), "valid": torch.tensor([2, 3]), "test": torch.tensor([4, 5])}
    meta = write_ogb_node_dataset(folder, edge_index, y, split, edge_attr=edge_attr, name="ogbn-proteins",
                                  task_type="binary classification", eval_metric="rocauc", num_classes=2,
                                  add_inverse_edge=True, split_name="species",
                                  node_files={"node_species": torch.full((6, 1), 3702)})
    return meta, edge_attr, y


def test_proteins_layout_multilabel_features_from_edges_and_rocauc(tmp_path):
    meta, edge_attr, y = _proteins_like(tmp_path / "ogbn_proteins")
    data = load_ogb_folder(tmp_path / "ogbn_proteins", meta, "ogbn-proteins")
    assert (data.task, data.num_classes, data.metric) == ("multilabel", 112, "ogb:ogbn-proteins")
    assert data.y.shape == (6, 112) and data.y.dtype == torch.float32 and torch.equal(data.y, y.float())
    # node features: mean of the features of the edges at the node
    expected = torch.stack([edge_attr[0], (edge_attr[0] + edge_attr[1]) / 2, (edge_attr[1] + edge_attr[2]) / 2,
                            (edge_attr[2] + edge_attr[3]) / 2, (edge_attr[3] + edge_attr[4]) / 2, edge_attr[4]])
    assert torch.allclose(data.x, expected)
    score = get_evaluator(data.metric)
    perfect = data.y * 2 - 1
    assert score(perfect, data.y, data.test_mask) == 1.0
    assert score(-perfect, data.y, data.test_mask) == 0.0
    # sigmoid + binary cross-entropy, not softmax
    logits = torch.zeros(6, 112)
    assert float(data.loss(logits, data.y)) == pytest.approx(float(torch.log(torch.tensor(2.0))))


def test_load_by_name_links_a_read_only_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPRUNE_CACHE", str(tmp_path / "cache"))
    _arxiv_like(tmp_path / "root" / "ogbn_arxiv")
    raw = tmp_path / "root" / "ogbn_arxiv" / "raw"
    mode = raw.stat().st_mode
    os.chmod(raw, stat.S_IRUSR | stat.S_IXUSR)
    try:
        data = load_dataset("ogbn-arxiv", tmp_path / "root")
    finally:
        os.chmod(raw, mode)
    assert data.num_nodes == 8 and data.edges.num_edges == 7
    assert (tmp_path / "cache" / "ogb" / "ogbn_arxiv" / "processed" / "geometric_data_processed.pt").exists()
    assert data.info["source"] == str((tmp_path / "root" / "ogbn_arxiv").resolve())


def test_missing_ogb_dataset_names_paths_and_download(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("ogbn-products", tmp_path)
    message = str(info.value)
    assert str((tmp_path / "ogbn_products").resolve()) in message
    assert "--download" in message and "network" in message
    assert "\n" not in message


def test_master_meta_is_the_installed_row():
    meta = ogb_master_meta("ogbn-proteins")
    assert (meta["num tasks"], meta["eval metric"], meta["add_inverse_edge"]) == ("112", "rocauc", "True")
    with pytest.raises(ValueError, match="not an OGB node data set"):
        ogb_master_meta("ogbn-nope")


def test_our_rocauc_agrees_with_the_ogb_evaluator():
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(50, 112, generator=g) < 0.3).float()
    logits = torch.randn(50, 112, generator=g) + y
    mask = torch.ones(50, dtype=torch.bool)
    assert get_evaluator("rocauc")(logits, y, mask) == pytest.approx(get_evaluator("ogb:ogbn-proteins")(logits, y, mask))


def test_our_rocauc_counts_tied_scores_as_the_ogb_evaluator_does():
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(60, 8, generator=g) < 0.4).float()
    logits = (torch.randn(60, 8, generator=g) + y).round()  # a handful of values: many ties across classes
    mask = torch.ones(60, dtype=torch.bool)
    ours = get_evaluator("rocauc")(logits, y, mask)
    assert ours == pytest.approx(get_evaluator("ogb:ogbn-proteins")(logits.repeat(1, 14), y.repeat(1, 14), mask))
    assert mean_ranks(torch.tensor([[2.0], [1.0], [2.0], [0.5]])).view(-1).tolist() == [3.5, 2.0, 3.5, 1.0]


def test_cli_trains_a_multilabel_ogb_layout_with_the_official_evaluator(tmp_path, monkeypatch):
    import json

    from gnnprune.cli import main

    monkeypatch.setenv("GNNPRUNE_CACHE", str(tmp_path / "cache"))
    _proteins_like(tmp_path / "root" / "ogbn_proteins")
    out = tmp_path / "run"
    code = main(["prune", "--dataset", "ogbn-proteins", "--data-root", str(tmp_path / "root"), "--epochs", "6",
                 "--hidden", "8", "--edge-sparsity", "0.4", "--prune-start", "1", "--prune-end", "3",
                 "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["data"]["metric"] == "ogb:ogbn-proteins" and record["data"]["task"] == "multilabel"
    assert record["data"]["classes"] == 112
    run = record["runs"][0]
    assert 0.0 <= run["test"] <= 1.0 and run["sparsity"]["kept_edges"] == 3  # 5 edges, round(0.4 * 5) removed

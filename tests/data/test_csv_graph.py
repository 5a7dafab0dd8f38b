from pathlib import Path

import pytest
import torch

from gnnprune.cli import main
from gnnprune.data import CSVSplit, DataFormatError, check_dataset_name, load_dataset, parse_csv_spec
from gnnprune.data.csv_graph import load_csv_graph, stratified_split


def _write(folder, edges="id_1,id_2\n0,1\n2,1\n1,0\n3,3\n",
           features="node_id,feature_id,value\n0,0,1.0\n1,2,2.5\n3,1,1.0\n",
           target="id,target\n0,1\n1,0\n2,1\n3,0\n"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("edges.csv", edges), ("features.csv", features), ("target.csv", target)):
        (folder / name).write_text(text)
    return folder


def test_sparse_triples(tmp_path):
    data = load_csv_graph(_write(tmp_path / "g"), CSVSplit(train=0.5, val=0.0))
    assert data.edges.edges.tolist() == [[0, 1], [1, 2]]  # 1-0 duplicate and 3-3 self-loop dropped
    assert data.x.tolist() == [[1, 0, 0], [0, 0, 2.5], [0, 0, 0], [0, 1, 0]]
    assert data.y.tolist() == [1, 0, 1, 0] and data.num_classes == 2
    assert data.info["feature_layout"] == "sparse"
    assert data.info["split"] == {"train": 0.5, "val": 0.0, "test": 0.5, "seed": 0}


def test_dense_rows(tmp_path):
    folder = _write(tmp_path / "g", features="node_id,a,b\n1,3,4\n0,1,2\n2,5,6\n3,7,8\n",
                    target="id,target\n0,cat\n1,dog\n2,cat\n3,dog\n")
    data = load_csv_graph(folder)
    assert data.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert data.info["class_labels"] == ["cat", "dog"] and data.y.tolist() == [0, 1, 0, 1]


def test_stratified_split_is_seeded_and_per_class():
    y = torch.tensor([0] * 40 + [1] * 20)
    train, val, test = stratified_split(y, 2, CSVSplit(train=0.5, val=0.25, seed=3))
    assert (int(train[y == 0].sum()), int(val[y == 0].sum()), int(test[y == 0].sum())) == (20, 10, 10)
    assert (int(train[y == 1].sum()), int(val[y == 1].sum()), int(test[y == 1].sum())) == (10, 5, 5)
    assert not bool((train & val).any() or (train & test).any() or (val & test).any())
    again = stratified_split(y, 2, CSVSplit(train=0.5, val=0.25, seed=3))
    other = stratified_split(y, 2, CSVSplit(train=0.5, val=0.25, seed=4))
    assert torch.equal(again[0], train) and not torch.equal(other[0], train)


@pytest.mark.parametrize("files, message", [
    ({"edges": "id_1,id_2\n0,1\n0,9\n"}, r"edges\.csv, line 3: node id 9 out of range \[0, 4\)"),
    ({"edges": "id_1,id_2\n0,1\n0,x\n"}, r"edges\.csv, line 3: 'x' is not an integer"),
    ({"features": "node_id,a,b\n0,1,2\n1,3\n"}, r"features\.csv, line 3: 2 fields, expected 3"),
    ({"features": "node_id,a,b\n0,1,2\n1,3,4\n2,5,6\n"}, r"features\.csv: no feature row for node 3"),
    ({"features": "node_id,feature_id,value\n0,1,zz\n"}, r"features\.csv, line 2: 'zz' is not a number"),
    ({"target": "id,target\n0,1\n1,0\n3,1\n"}, r"target\.csv: no label for node 2"),
    ({"target": "id,target\n0,1\n1,0\n1,1\n"}, r"target\.csv, line 4: node 1 already labelled on line 3"),
    ({"target": ""}, r"target\.csv: empty file"),
    ({"edges": "id_1,id_2\n"}, r"edges\.csv: no data rows"),
])
def test_corrupt_files_name_file_and_line(tmp_path, files, message):
    folder = _write(tmp_path / "g", **files)
    with pytest.raises(DataFormatError, match=message):
        load_csv_graph(folder)


def test_spec_parsing_and_cli_errors(tmp_path, capsys):
    assert parse_csv_spec("csv:/a/b,train=0.6,val=0.1,seed=2") == (Path("/a/b"), CSVSplit(0.6, 0.1, 2))
    with pytest.raises(ValueError, match="bad csv option"):
        check_dataset_name("csv:/a,test=0.3")
    with pytest.raises(ValueError, match="train"):
        check_dataset_name("csv:/a,train=0.8,val=0.3")
    folder = _write(tmp_path / "bad", edges="id_1,id_2\n0,7\n")
    code = main(["prune", "--dataset", f"csv:{folder}", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "edges.csv, line 2" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="missing edges.csv"):
        load_dataset(f"csv:{tmp_path / 'nowhere'}")


def test_twitch_example_loads():
    try:
        data = load_dataset("csv:../shared/data/karateclub/twitch")
    except FileNotFoundError as exc:  # pragma: no cover - data ships beside the repo
        pytest.skip(str(exc))
    assert (data.num_nodes, data.edges.num_edges, data.num_classes) == (7126, 35324, 2)
    assert data.split_sizes() == {"train": 3563, "val": 1782, "test": 1781}

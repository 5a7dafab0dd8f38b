"""Graphs from CSV files in the Karate Club layout, with a seeded stratified split.

A folder holds three files, each with a header row:

* ``edges.csv``: ``id_1,id_2`` (one row per edge, either direction; duplicates and self-loops are dropped);
* ``target.csv``: ``id,target``, one label for every node ``0 .. N-1``;
* ``features.csv``: sparse triples ``node_id,feature_id,value``, or dense rows ``node_id,f_0,...,f_{F-1}``.

Every inconsistency (empty file, a ragged row, a non-number, a node id out of range, a node
without a label) raises :class:`DataFormatError` naming the file and its line.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..graph import EdgeSet
from .graph_data import GraphData
from .paths import DataNotFoundError

FILES = ("edges.csv", "features.csv", "target.csv")
SPARSE_HEADER = ["node_id", "feature_id", "value"]


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class CSVSplit:
    """Seeded stratified split: per class, ``train`` and ``val`` fractions; the rest is test.

    Attributes:
        train: fraction of each class used for training.
        val: fraction of each class used for validation.
        seed: seed of the split (independent of the training seed).
    """

    train: float = 0.5
    val: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.train < 1 and 0 <= self.val < 1 and self.train + self.val < 1):
            raise ValueError(f"split fractions need 0 < train, 0 <= val, train + val < 1; got {self.train}, {self.val}")
        if self.seed < 0:
            raise ValueError(f"split seed must be >= 0, got {self.seed}")


def parse_csv_spec(spec: str) -> tuple[Path, CSVSplit]:
    """``csv:PATH`` or ``csv:PATH,train=0.6,val=0.2,seed=1`` -> ``(folder, split)``."""
    _, _, rest = spec.partition(":")
    parts = rest.split(",")
    path_parts = []
    while parts and "=" not in parts[0]:
        path_parts.append(parts.pop(0))
    path = ",".join(path_parts)
    if not path:
        raise ValueError(f"bad dataset {spec!r}; use csv:PATH[,train=F,val=F,seed=N]")
    kwargs: dict = {}
    for item in parts:
        key, _, value = item.partition("=")
        if key not in ("train", "val", "seed"):
            raise ValueError(f"bad csv option {item!r}; use train=F, val=F or seed=N")
        try:
            kwargs[key] = int(value) if key == "seed" else float(value)
        except ValueError:
            raise ValueError(f"bad csv option {item!r}: {value!r} is not a number") from None
    return Path(path), CSVSplit(**kwargs)


def _rows(path: Path, width: int | None = None) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header and ``(line number, row)`` pairs; rows must have ``width`` (default: the header's) fields."""
    handle = open(path, newline="")
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        handle.close()
        raise DataFormatError(f"{path}: empty file (expected a header row)")
    header = [cell.strip() for cell in header]
    width = width or len(header)

    def rows() -> Iterator[tuple[int, list[str]]]:
        with handle:
            count = 0
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != width:
                    raise DataFormatError(f"{path}, line {reader.line_num}: {len(row)} fields, expected {width}")
                count += 1
                yield reader.line_num, row
            if count == 0:
                raise DataFormatError(f"{path}: no data rows after the header")

    return header, rows()


def _number(path: Path, line: int, text: str, kind=int):
    try:
        return kind(text)
    except ValueError:
        raise DataFormatError(f"{path}, line {line}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None


def _node_id(path: Path, line: int, text: str, num_nodes: int) -> int:
    node = _number(path, line, text)
    if not 0 <= node < num_nodes:
        raise DataFormatError(f"{path}, line {line}: node id {node} out of range [0, {num_nodes}) "
                              f"(target.csv labels {num_nodes} nodes)")
    return node


def read_targets(path: Path) -> tuple[Tensor, list[str]]:
    """``[N]`` label indices and the sorted original label values."""
    _, rows = _rows(path, width=2)
    raw: dict[int, str] = {}
    lines: dict[int, int] = {}
    for line, (node_text, label) in rows:
        node = _number(path, line, node_text)
        if node < 0:
            raise DataFormatError(f"{path}, line {line}: negative node id {node}")
        if node in raw:
            raise DataFormatError(f"{path}, line {line}: node {node} already labelled on line {lines[node]}")
        raw[node], lines[node] = label.strip(), line
    num_nodes = max(raw) + 1
    if len(raw) != num_nodes:
        missing = next(i for i in range(num_nodes) if i not in raw)
        raise DataFormatError(f"{path}: no label for node {missing} (labels must cover node ids 0..{num_nodes - 1}; "
                              f"{num_nodes - len(raw)} missing)")
    values = set(raw.values())
    numeric = all(v.lstrip("-").isdigit() for v in values)
    classes = sorted(values, key=int) if numeric else sorted(values)
    if len(classes) < 2:
        raise DataFormatError(f"{path}: a single class ({classes[0]!r}); node classification needs >= 2")
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[raw[i]] for i in range(num_nodes)]), classes


def read_edges(path: Path, num_nodes: int) -> EdgeSet:
    _, rows = _rows(path, width=2)
    src, dst = [], []
    for line, (a, b) in rows:
        src.append(_node_id(path, line, a, num_nodes))
        dst.append(_node_id(path, line, b, num_nodes))
    return EdgeSet.from_edge_index(torch.tensor([src, dst]), num_nodes)


def read_features(path: Path, num_nodes: int) -> tuple[Tensor, str]:
    """``[N, F]`` features and their layout (``"sparse"`` triples or ``"dense"`` rows)."""
    header, rows = _rows(path)
    if [h.lower() for h in header] == SPARSE_HEADER:
        nodes, cols, vals = [], [], []
        for line, (node, feature, value) in rows:
            nodes.append(_node_id(path, line, node, num_nodes))
            col = _number(path, line, feature)
            if col < 0:
                raise DataFormatError(f"{path}, line {line}: negative feature id {col}")
            cols.append(col)
            vals.append(_number(path, line, value, float))
        x = torch.zeros(num_nodes, max(cols) + 1)
        x.index_put_((torch.tensor(nodes), torch.tensor(cols)), torch.tensor(vals), accumulate=True)
        return x, "sparse"
    if len(header) < 2:
        raise DataFormatError(f"{path}: dense rows need node_id and >= 1 feature column, header has {len(header)}")
    x = torch.empty(num_nodes, len(header) - 1)
    seen = torch.zeros(num_nodes, dtype=torch.bool)
    for line, row in rows:
        node = _node_id(path, line, row[0], num_nodes)
        if seen[node]:
            raise DataFormatError(f"{path}, line {line}: features of node {node} given twice")
        x[node] = torch.tensor([_number(path, line, v, float) for v in row[1:]])
        seen[node] = True
    if not bool(seen.all()):
        missing = int((~seen).nonzero()[0])
        raise DataFormatError(f"{path}: no feature row for node {missing} ({int((~seen).sum())} nodes missing)")
    return x, "dense"


def stratified_split(y: Tensor, num_classes: int, split: CSVSplit) -> tuple[Tensor, Tensor, Tensor]:
    """Per class: a seeded permutation, the first ``round(train * n_c)`` train, the next ``round(val * n_c)`` val."""
    g = torch.Generator().manual_seed(split.seed)
    masks = [torch.zeros(y.numel(), dtype=torch.bool) for _ in range(3)]
    for c in range(num_classes):
        members = (y == c).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=g)]
        n_train = round(split.train * members.numel())
        n_val = round(split.val * members.numel())
        masks[0][members[:n_train]] = True
        masks[1][members[n_train:n_train + n_val]] = True
        masks[2][members[n_train + n_val:]] = True
    return masks[0], masks[1], masks[2]


def load_csv_graph(folder: str | os.PathLike, split: CSVSplit = CSVSplit()) -> GraphData:
    """Load a Karate Club style folder (see the module docstring) with a stratified split."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataNotFoundError(f"{folder.resolve()}: missing {', '.join(missing)} (a csv data set needs {', '.join(FILES)})")
    y, classes = read_targets(folder / "target.csv")
    n = y.numel()
    edges = read_edges(folder / "edges.csv", n)
    x, layout = read_features(folder / "features.csv", n)
    train, val, test = stratified_split(y, len(classes), split)
    return GraphData(
        name=f"csv:{folder.name}", x=x, edges=edges, y=y, train_mask=train, val_mask=val, test_mask=test,
        num_classes=len(classes),
        info={"source": str(folder.resolve()), "feature_layout": layout, "class_labels": classes,
              "split_kind": "stratified", "split": {"train": split.train, "val": split.val,
                                                    "test": round(1 - split.train - split.val, 10), "seed": split.seed}},
    )

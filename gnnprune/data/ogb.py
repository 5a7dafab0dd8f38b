"""OGB node-property data sets (ogbn-arxiv, ogbn-proteins, ogbn-products) and a writer of that format.

Loading goes through the real ``ogb.nodeproppred.PygNodePropPredDataset`` with the official
split; scores go through ``ogb.nodeproppred.Evaluator`` (metric ``"ogb:<name>"``). The raw
folder is never written to: processing happens in ``<cache>/ogb/<dir>`` beside links to it.

:func:`write_ogb_node_dataset` writes any graph in the same on-disk layout
(``raw/*.csv.gz``, ``split/<split>/{train,valid,test}.csv.gz``) and returns the ``meta_dict``
that loads it back, so users can export their own graphs and tests can exercise the real loader.
"""
from __future__ import annotations

import gzip
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..graph import EdgeSet
from .graph_data import GraphData
from ..io import folder_lock
from .paths import DataNotFoundError, cache_dir, find

OGB_NODE_DATASETS = ("ogbn-arxiv", "ogbn-proteins", "ogbn-products")

_TASKS = {"multiclass classification": "multiclass", "binary classification": "multilabel"}


def ogb_master_meta(name: str) -> dict[str, str]:
    """The row of ``ogb/nodeproppred/master.csv`` for ``name`` (every value a string, as ogb reads it)."""
    import pandas as pd
    from ogb import nodeproppred

    master = pd.read_csv(Path(nodeproppred.__file__).parent / "master.csv", index_col=0, keep_default_na=False)
    if name not in master:
        raise ValueError(f"{name!r} is not an OGB node data set; known: {', '.join(master.keys())}")
    return {key: str(value) for key, value in master[name].items()}


def _write_csv_gz(path: Path, rows: np.ndarray, fmt: str) -> None:
    rows = rows.reshape(rows.shape[0], -1)
    with gzip.open(path, "wt") as handle:
        np.savetxt(handle, rows, fmt=fmt, delimiter=",")


def _fmt(array: np.ndarray) -> str:
    return "%d" if np.issubdtype(array.dtype, np.integer) else "%.9g"


def write_ogb_node_dataset(folder: str | os.PathLike, edge_index: Tensor, y: Tensor, split: dict[str, Tensor], *,
                           x: Tensor | None = None, edge_attr: Tensor | None = None,
                           node_files: dict[str, Tensor] | None = None, name: str = "ogbn-custom",
                           task_type: str = "multiclass classification", eval_metric: str = "acc",
                           num_classes: int | None = None, add_inverse_edge: bool = False,
                           split_name: str = "custom") -> dict[str, str]:
    """Write one homogeneous graph in the OGB node-property on-disk layout.

    Files: ``raw/edge.csv.gz`` (one ``src,dst`` row per stored edge), ``raw/num-node-list.csv.gz``,
    ``raw/num-edge-list.csv.gz``, ``raw/node-label.csv.gz``, optional ``raw/node-feat.csv.gz``,
    ``raw/edge-feat.csv.gz`` and ``raw/<node_file>.csv.gz``, ``split/<split_name>/{train,valid,test}.csv.gz``
    and ``RELEASE_v1.txt``.

    Args:
        folder: the data set folder (created).
        edge_index: ``[2, E]`` stored edges (each once if ``add_inverse_edge``).
        y: ``[N]`` class labels or ``[N, T]`` binary targets.
        split: ``{"train", "valid", "test"}`` -> node indices.
        x: ``[N, F]`` node features (optional).
        edge_attr: ``[E, D]`` edge features (optional).
        node_files: extra per-node files, names starting with ``node_`` (e.g. ``node_year``).
        name, task_type, eval_metric, num_classes, add_inverse_edge, split_name: the ``master.csv`` fields.

    Returns:
        the ``meta_dict`` for ``PygNodePropPredDataset(name, meta_dict=...)``.
    """
    folder = Path(folder)
    raw = folder / "raw"
    split_dir = folder / "split" / split_name
    raw.mkdir(parents=True, exist_ok=True)
    split_dir.mkdir(parents=True, exist_ok=True)
    y2 = y.view(y.size(0), -1)
    num_nodes = int(y2.size(0))
    node_files = dict(node_files or {})
    for key in node_files:
        if not key.startswith("node_"):
            raise ValueError(f"node file names must start with 'node_', got {key!r}")
    if edge_index.numel() and int(edge_index.max()) >= num_nodes:
        raise ValueError(f"edge endpoint {int(edge_index.max())} out of range for {num_nodes} nodes")
    edges = edge_index.t().numpy().astype(np.int64)
    _write_csv_gz(raw / "edge.csv.gz", edges, "%d")
    _write_csv_gz(raw / "num-node-list.csv.gz", np.array([num_nodes]), "%d")
    _write_csv_gz(raw / "num-edge-list.csv.gz", np.array([edges.shape[0]]), "%d")
    labels = y2.numpy()
    _write_csv_gz(raw / "node-label.csv.gz", labels, _fmt(labels))
    for file, tensor in (("node-feat", x), ("edge-feat", edge_attr), *node_files.items()):
        if tensor is not None:
            array = tensor.numpy()
            _write_csv_gz(raw / f"{file}.csv.gz", array, _fmt(array))
    for part in ("train", "valid", "test"):
        _write_csv_gz(split_dir / f"{part}.csv.gz", split[part].numpy().astype(np.int64), "%d")
    (folder / "RELEASE_v1.txt").write_text("written by gnnprune.data.ogb.write_ogb_node_dataset\n")
    return {
        "dir_path": str(folder), "version": "1", "download_name": folder.name, "url": "",
        "num tasks": str(y2.size(1)), "task type": task_type, "eval metric": eval_metric,
        "num classes": str(num_classes if num_classes is not None else int(y2.max()) + 1),
        "add_inverse_edge": str(add_inverse_edge), "has_node_attr": str(x is not None),
        "has_edge_attr": str(edge_attr is not None), "split": split_name,
        "additional node files": ",".join(node_files) or "None", "additional edge files": "None",
        "is hetero": "False", "binary": "False",
    }


def _node_features(data, num_nodes: int) -> Tensor:
    """Node features; without them (ogbn-proteins), the mean of the features of incident edges."""
    if getattr(data, "x", None) is not None:
        return data.x.float()
    if getattr(data, "edge_attr", None) is None:
        raise ValueError("the OGB graph has neither node nor edge features")
    attr = data.edge_attr.float()
    target = data.edge_index[1]
    total = torch.zeros(num_nodes, attr.size(1)).index_add_(0, target, attr)
    count = torch.bincount(target, minlength=num_nodes).clamp_min(1).unsqueeze(1)
    return total / count


def graph_data_from_ogb(dataset, name: str, info: dict | None = None) -> GraphData:
    """Convert a loaded ``PygNodePropPredDataset`` to :class:`GraphData` with its official split.

    Edges are made undirected (ogbn-arxiv is directed); binary-classification data sets
    (ogbn-proteins) become multi-label tasks with ``[N, T]`` float targets.
    """
    data = dataset[0]
    n = int(data.num_nodes)
    task = _TASKS.get(dataset.task_type)
    if task is None:
        raise ValueError(f"{name}: unsupported OGB task type {dataset.task_type!r}")
    y = data.y.view(n, -1)
    if task == "multiclass":
        y, num_classes = y[:, 0].long(), int(dataset.num_classes)
    else:
        y, num_classes = y.float(), int(dataset.num_tasks)
    masks = {}
    for part, index in dataset.get_idx_split().items():
        mask = torch.zeros(n, dtype=torch.bool)
        mask[index] = True
        masks[part] = mask
    known = name in _master_names()
    if not known and task != "multiclass":
        raise ValueError(f"{name}: the OGB Evaluator knows only the official names; a custom multi-label "
                         "data set has no evaluator")
    return GraphData(
        name=name, x=_node_features(data, n), edges=EdgeSet.from_edge_index(data.edge_index, n), y=y,
        train_mask=masks["train"], val_mask=masks["valid"], test_mask=masks["test"], num_classes=num_classes,
        metric=f"ogb:{name}" if known else "accuracy", task=task,
        info={"split_kind": f"ogb official ({dataset.meta_info['split']})", **(info or {})},
    )


def _master_names() -> tuple[str, ...]:
    import pandas as pd
    from ogb import nodeproppred

    return tuple(pd.read_csv(Path(nodeproppred.__file__).parent / "master.csv", index_col=0).columns)


def open_ogb_folder(name: str, meta_dict: dict):
    """``PygNodePropPredDataset(name, meta_dict=meta_dict)`` with ogb's console chatter silenced."""
    import contextlib
    import io

    from ogb.nodeproppred import PygNodePropPredDataset

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), torch.serialization.safe_globals(_pyg_safe_globals()):
        warnings.simplefilter("ignore")
        return PygNodePropPredDataset(name, meta_dict=meta_dict)


def _pyg_safe_globals() -> list:
    """PyG classes in ogb's processed file, so that ``torch.load`` keeps ``weights_only=True``."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    return [DataEdgeAttr, DataTensorAttr, GlobalStorage]


def load_ogb_folder(folder: str | os.PathLike, meta_dict: dict, name: str | None = None) -> GraphData:
    """Load a folder written by :func:`write_ogb_node_dataset` (or any OGB-layout folder)."""
    name = name or Path(folder).name
    dataset = open_ogb_folder(name, {**meta_dict, "dir_path": str(folder)})
    return graph_data_from_ogb(dataset, name, {"source": str(Path(folder).resolve())})


def load_ogb(name: str, data_root=None, download: bool = False) -> GraphData:
    """Load ``ogbn-arxiv``, ``ogbn-proteins`` or ``ogbn-products`` from ``<root>/<ogbn_name>/``.

    The raw folder (as unpacked from OGB's zip) is linked into ``<cache>/ogb/<ogbn_name>``,
    where PyG writes its processed file. Without the files under any data root, raises
    :class:`DataNotFoundError` naming the paths tried, unless ``download`` lets ``ogb``
    fetch them into the cache (needs a network).
    """
    if name not in OGB_NODE_DATASETS:
        raise ValueError(f"unknown OGB data set {name!r}; choose from {', '.join(OGB_NODE_DATASETS)}")
    dir_name = name.replace("-", "_")
    meta = ogb_master_meta(name)
    work = cache_dir(data_root) / "ogb" / dir_name
    try:
        source = find(dir_name, "raw/edge.csv.gz", data_root, what=f"{name} (OGB raw files)")
    except DataNotFoundError as exc:
        if not download:
            raise DataNotFoundError(f"{exc}; OGB data sets download with --download where there is a network") from None
        from ogb.nodeproppred import PygNodePropPredDataset

        with folder_lock(work.parent), torch.serialization.safe_globals(_pyg_safe_globals()):
            dataset = PygNodePropPredDataset(name, root=str(work.parent))
        return graph_data_from_ogb(dataset, name, {"source": str(work.resolve())})
    with folder_lock(work.parent):  # concurrent first runs: one links and processes
        if source.resolve() != work.resolve():
            _link_raw(source, work, meta["version"])
        dataset = open_ogb_folder(name, {**meta, "dir_path": str(work)})
    return graph_data_from_ogb(dataset, name, {"source": str(source.resolve())})


def _link_raw(source: Path, work: Path, version: str) -> None:
    """``work/raw`` and ``work/split`` as links to the (possibly read-only) ``source`` folder."""
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("raw", "split"):
        link = work / sub
        if not link.exists():
            os.symlink(source.resolve() / sub, link, target_is_directory=True)
    release = work / f"RELEASE_v{version}.txt"
    if not release.exists():
        original = source / release.name
        if original.exists():
            shutil.copy2(original, release)
        else:
            release.write_text(f"linked from {source.resolve()}\n")

"""Cora and CiteSeer with the public Planetoid split."""
from __future__ import annotations

import shutil
import warnings

from ..graph import EdgeSet
from ..io import folder_lock
from .graph_data import GraphData
from .paths import DataNotFoundError, cache_dir, find

_NAMES = {"cora": "Cora", "citeseer": "CiteSeer"}


def load_planetoid(name: str, data_root=None, download: bool = False) -> GraphData:
    """Load a Planetoid data set from ``<root>/Planetoid/<Name>/raw``.

    The raw files are copied into the cache before PyG processes them, so a read-only data
    folder stays untouched. Features are row-normalised (as in the GCN paper).

    Args:
        download: if the files are under no data root, let PyG download them into the cache
            (needs a network); otherwise a missing data set raises :class:`DataNotFoundError`.
    """
    pyg_name = _NAMES[name]
    probe = f"ind.{pyg_name.lower()}.graph"
    root = cache_dir(data_root) / "Planetoid"
    target = root / pyg_name / "raw"
    try:
        raw = find(f"Planetoid/{pyg_name}/raw", probe, data_root, what=f"{name} (Planetoid raw files)")
    except DataNotFoundError as exc:
        if not download:
            raise DataNotFoundError(f"{exc}; pass --download to fetch it where there is a network") from None
        raw = target
    with folder_lock(root), warnings.catch_warnings():  # concurrent first runs: one copies and processes
        if not (target / probe).exists() and raw != target:
            target.mkdir(parents=True, exist_ok=True)
            for file in raw.iterdir():
                shutil.copy2(file, target / file.name)
        warnings.simplefilter("ignore")
        from torch_geometric.datasets import Planetoid

        dataset = Planetoid(str(root), pyg_name, split="public")
    data = dataset[0]
    x = data.x.float()
    x = x / x.sum(1, keepdim=True).clamp_min(1.0)
    return GraphData(
        name=name, x=x, edges=EdgeSet.from_edge_index(data.edge_index, data.num_nodes), y=data.y.long(),
        train_mask=data.train_mask.bool(), val_mask=data.val_mask.bool(), test_mask=data.test_mask.bool(),
        num_classes=int(dataset.num_classes), info={"source": str(raw.resolve()), "split_kind": "public"},
    )

"""Data sets by name.

* ``cora``, ``citeseer``: Planetoid, public split;
* ``ogbn-arxiv``, ``ogbn-proteins``, ``ogbn-products``: OGB, official split and Evaluator;
* ``csv:PATH[,train=F,val=F,seed=N]``: a Karate Club style CSV folder, stratified split;
* ``synthetic[:PRESET][,KEY=VALUE,...]``: a CSBM graph; presets ``arxiv`` and ``products``
  have the sizes of those OGB data sets.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace

from .csv_graph import CSVSplit, DataFormatError, load_csv_graph, parse_csv_spec
from .graph_data import TASK_LOSSES, GraphData, per_class_split
from .ogb import OGB_NODE_DATASETS, load_ogb, write_ogb_node_dataset
from .paths import DataNotFoundError, cache_dir, data_roots
from .planetoid import load_planetoid
from .synthetic import PRESETS, CSBMConfig, csbm

DATASETS = ("cora", "citeseer", "synthetic", "synthetic:arxiv", "synthetic:products", *OGB_NODE_DATASETS, "csv:PATH")


def parse_synthetic(spec: str) -> CSBMConfig:
    """``synthetic``, ``synthetic:arxiv`` or ``synthetic:[arxiv,]num_nodes=5000,homophily=0.7`` -> :class:`CSBMConfig`."""
    _, _, rest = spec.partition(":")
    items = [item for item in rest.split(",") if item]
    config = CSBMConfig()
    if items and "=" not in items[0]:
        preset = items.pop(0)
        if preset not in PRESETS:
            raise ValueError(f"unknown synthetic preset {preset!r}; choose from {', '.join(PRESETS)}")
        config = PRESETS[preset]
    types = {f.name: f.type for f in fields(CSBMConfig)}
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"bad synthetic option {item!r}; use KEY=VALUE with KEY in {', '.join(types)}")
        cast = float if types[key] in (float, "float") else int
        try:
            kwargs[key] = cast(value)
        except ValueError:
            raise ValueError(f"bad synthetic option {item!r}: {key} needs a{'' if cast is float else 'n'} "
                             f"{cast.__name__}") from None
    return replace(config, **kwargs)


def _load_synthetic(name: str, data_root=None, download: bool = False) -> GraphData:
    return csbm(parse_synthetic(name))


def _load_csv(name: str, data_root=None, download: bool = False) -> GraphData:
    return load_csv_graph(*parse_csv_spec(name))


def _load_ogb(name: str, data_root=None, download: bool = False) -> GraphData:
    return load_ogb(name, data_root, download)


#: ``name prefix -> (check(name), load(name, data_root, download))``
_LOADERS: dict[str, tuple[Callable[[str], object], Callable[..., GraphData]]] = {
    "cora": (lambda name: None, load_planetoid),
    "citeseer": (lambda name: None, load_planetoid),
    **{ogb_name: (lambda name: None, _load_ogb) for ogb_name in OGB_NODE_DATASETS},
    "csv": (parse_csv_spec, _load_csv),
    "synthetic": (parse_synthetic, _load_synthetic),
}


def check_dataset_name(name: str) -> None:
    """Raise ``ValueError`` listing the choices if ``name`` is not a known data set (or its options are bad)."""
    base = name.split(":", 1)[0]
    if base not in _LOADERS or (":" in name and base not in ("csv", "synthetic")):
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    _LOADERS[base][0](name)


def load_dataset(name: str, data_root=None, download: bool = False) -> GraphData:
    """Load a data set by name (see :data:`DATASETS`); ``download`` allows fetching public data."""
    check_dataset_name(name)
    return _LOADERS[name.split(":", 1)[0]][1](name, data_root, download)


__all__ = ["CSBMConfig", "CSVSplit", "DATASETS", "DataFormatError", "DataNotFoundError", "GraphData", "OGB_NODE_DATASETS",
           "PRESETS", "TASK_LOSSES", "cache_dir", "check_dataset_name", "csbm", "data_roots", "load_csv_graph",
           "load_dataset", "load_ogb", "parse_csv_spec", "parse_synthetic", "per_class_split",
           "write_ogb_node_dataset"]

"""Data sets by name: ``cora``, ``citeseer``, ``synthetic`` / ``synthetic:KEY=VALUE,...``."""
from __future__ import annotations

from dataclasses import fields

from .graph_data import GraphData, per_class_split
from .paths import DataNotFoundError, cache_dir, data_roots
from .planetoid import load_planetoid
from .synthetic import CSBMConfig, csbm

DATASETS = ("cora", "citeseer", "synthetic")


def parse_synthetic(spec: str) -> CSBMConfig:
    """``synthetic`` or ``synthetic:num_nodes=5000,homophily=0.7`` -> :class:`CSBMConfig`."""
    _, _, rest = spec.partition(":")
    types = {f.name: f.type for f in fields(CSBMConfig)}
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"bad synthetic option {item!r}; use KEY=VALUE with KEY in {', '.join(types)}")
        cast = float if types[key] in (float, "float") else int
        try:
            kwargs[key] = cast(value)
        except ValueError:
            raise ValueError(f"bad synthetic option {item!r}: {key} needs a{'' if cast is float else 'n'} "
                             f"{cast.__name__}") from None
    return CSBMConfig(**kwargs)


def check_dataset_name(name: str) -> None:
    """Raise ``ValueError`` listing the choices if ``name`` is not a known data set."""
    base = name.split(":", 1)[0]
    if base not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if base == "synthetic":
        parse_synthetic(name)


def load_dataset(name: str, data_root=None, download: bool = False) -> GraphData:
    """Load a data set by name (see :data:`DATASETS`); ``download`` allows fetching public data."""
    check_dataset_name(name)
    if name in ("cora", "citeseer"):
        return load_planetoid(name, data_root, download)
    return csbm(parse_synthetic(name))


__all__ = ["CSBMConfig", "DATASETS", "DataNotFoundError", "GraphData", "cache_dir", "check_dataset_name",
           "csbm", "data_roots", "load_dataset", "parse_synthetic", "per_class_split"]

"""gnnprune: co-pruning of graph edges, input features and weights of GNNs in one training run.

``import gnnprune as gp`` gives the public API::

    data = gp.load_dataset("cora")
    result = gp.prune("gcn", data, gp.PruneTargets(weights=0.9, edges=0.5, features=0.5))

:func:`prune` runs a whole run (a registered model by name, or a ``torch_geometric`` model of
your own); :func:`attach` gives the hooks for a training loop of your own; :func:`train` is the
one built-in loop. Names are resolved on first use, so ``import gnnprune`` alone loads nothing
heavy (and never the CNN side, ``cnn_bridge``).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module defining it
_EXPORTS = {
    "prune": "api", "attach": "api", "PruneResult": "api",
    "ExperimentConfig": "config", "ModelConfig": "config",
    "CoPruner": "copruning", "PruneTargets": "copruning", "WeightGranularity": "copruning",
    "EdgeRanking": "copruning", "FeatureScore": "copruning",
    "WeightDistribution": "masks",
    "PruneMethod": "methods", "Method": "methods", "CGP": "methods", "CGPConfig": "methods", "Dense": "methods",
    "RandomMasks": "methods", "OneShot": "methods", "OneShotConfig": "methods", "UGSConfig": "methods",
    "fit_ugs": "methods",
    "train": "training", "TrainConfig": "training", "TrainingRun": "training", "TrainResult": "training",
    "evaluate": "training",
    "load_dataset": "data", "GraphData": "data",
    "build_model": "nn", "GraphModel": "nn", "MODELS": "nn",
    "PyGModel": "pyg", "from_pyg": "pyg",
    "load_run": "runs", "LoadedRun": "runs",
    "export_run": "export", "load_exported": "export", "predict": "export", "compact": "export",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gnnprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""gnnprune: co-pruning of graph edges, input features and weights of GNNs in one training run."""
__version__ = "0.1.0"

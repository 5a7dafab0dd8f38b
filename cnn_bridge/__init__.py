"""CNN sparsification on gnnprune's mask engine.

CNN weights are sites of the same :class:`gnnprune.masks.MaskEngine` (``adapters``); ``rgp``
makes one-shot regular-graph block masks (graphs in ``graphs``); ``models`` are plain-torch CIFAR
and ImageNet-shape networks; ``counting`` gives exact parameter and MAC counts; ``data`` loads
CIFAR-10 (cached) and 8x8 digits; ``train`` and ``experiment`` run one training under fixed masks.
``criteria`` scores output channels (``scores = criterion(view)``, applied per layer by
``channel_scores``); ``allocation`` and ``sensitivity`` choose the channels kept under a budget,
``channel_masks`` masks them on the engine, ``prune_flow`` runs score -> mask -> fine-tune ->
compact, ``compact`` removes channels physically (torch-pruning dependency graph) and ``latency``
times masked against compact models. ``rmnet`` turns a CIFAR ResNet into the plain network with
the same function (every channel prunable); ``layer_analysis`` measures class modularity, CKA /
GBS similarity and ReLU gating complexity of layers; ``layer_pruning`` removes whole blocks.
``cli`` holds the ``gnnprune cnn`` commands. The package imports gnnprune, never the reverse:
gnnprune's command line reaches ``cli`` only when a ``cnn`` command runs.
"""

"""The ``gnnprune cnn`` commands: ``rgp`` (train under one-shot regular-graph block masks) and
``prune`` (structured filter pruning, fine-tuning, compaction).

:func:`gnnprune.cli.build_parser` makes the ``cnn`` parser and calls :func:`add_commands` only when
the command line asks for ``cnn`` (or the whole parser is built), so ``gnnprune prune`` never imports
this package. Argument types, the parser class and :class:`~gnnprune.cli.UsageError` are gnnprune's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from gnnprune.cli import (UsageError, _density, _int_at_least, _non_negative_float, _non_negative_int, _Parser,
                          _positive_int)

from .criteria import CRITERIA


def _add_run_arguments(p: argparse.ArgumentParser, threads_help: str) -> None:
    """Data subset, seed, run folder and runtime options shared by the ``cnn`` subcommands."""
    p.add_argument("--train-subset", type=_positive_int, help="class-stratified training subset size")
    p.add_argument("--test-subset", type=_positive_int, help="class-stratified test subset size")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--out", required=True, type=Path, help="run folder (must not exist or be empty)")
    p.add_argument("--data-root", type=Path, help="data folder holding cifar10/cifar10-jpeg.tar.gz (else $GNNPRUNE_DATA, ./data)")
    p.add_argument("--threads", type=_positive_int, help=threads_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_commands(cnn: argparse.ArgumentParser) -> None:
    """Add the ``rgp`` and ``prune`` subcommands to ``cnn``, the ``gnnprune cnn`` parser.

    Each sets ``cnn_handler``, which :func:`gnnprune.cli.main` calls with the parsed arguments.
    """
    cnn_sub = cnn.add_subparsers(dest="cnn_command", required=True, parser_class=_Parser)
    _add_rgp(cnn_sub)
    _add_prune(cnn_sub)


def _add_rgp(cnn_sub) -> None:
    p = cnn_sub.add_parser("rgp", help="train a CNN from scratch under one-shot regular-graph block masks",
                           description=(
                               "Regular-graph pruning: each convolution but the first gets n = min(G, C_in, C_out) "
                               "channel groups and a connected random k-regular graph on them, rewired for a short "
                               "average shortest path length, as its block mask; the classifier stays dense. The "
                               "model then trains from scratch with the masks fixed. Writes OUT/metrics.json "
                               "(accuracy, params and MACs dense vs pruned, per-layer graph statistics, wall "
                               "times), OUT/masks.pt and OUT/model.pt."),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20", help="resnet20, resnet56, resnet110, vgg16_bn, convnet, resnet50")
    p.add_argument("--dataset", default="cifar10", help="cifar10 or digits (scikit-learn's 8x8 digits)")
    p.add_argument("--mask", default="rgp",
                   help="rgp (optimised regular graph), random-regular (not rewired), random-element "
                        "(unstructured, same kept weights per layer) or dense")
    p.add_argument("--groups", type=_int_at_least(2), default=64, help="channel groups G per layer (at most)")
    density = p.add_mutually_exclusive_group()
    density.add_argument("--degree", type=_positive_int,
                         help="graph degree K at G groups: density K/G in every pruned layer (default 16)")
    density.add_argument("--density", type=_density, help="kept fraction of each pruned layer, in (0, 1)")
    p.add_argument("--swaps", type=_non_negative_int, default=1000, help="double-edge swap proposals per layer")
    p.add_argument("--epochs", type=_positive_int, default=10)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=_non_negative_float, default=0.1, help="peak SGD learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    _add_run_arguments(p, threads_help="torch CPU threads")
    p.set_defaults(cnn_handler=_rgp_command)


def _rgp_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.data import DataNotFoundError
    from gnnprune.io import OutputExistsError, check_new_folder

    from .experiment import IMAGE_DATASETS, MASKS, RGPRunConfig, check_choice, run_rgp
    from .models import build_cnn_model, cnn_model_spec
    from .rgp import RGPConfig, check_groups
    from .train import CNNTrainConfig

    try:
        cnn_model_spec(args.model)
        check_choice("mask", args.mask, MASKS)
        check_choice("dataset", args.dataset, IMAGE_DATASETS)
        if args.density is not None:
            rgp = RGPConfig(groups=args.groups, density=args.density, swaps=args.swaps)
        else:
            rgp = RGPConfig.from_degree(args.groups, 16 if args.degree is None else args.degree, swaps=args.swaps)
        config = RGPRunConfig(model=args.model, mask=args.mask, dataset=args.dataset, rgp=rgp,
                              train=CNNTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                                   weight_decay=args.weight_decay, augment=not args.no_augment,
                                                   seed=args.seed),
                              train_subset=args.train_subset, test_subset=args.test_subset)
        if args.mask != "dense":
            check_groups(build_cnn_model(args.model), args.groups)
        check_new_folder(args.out)
        data = IMAGE_DATASETS[args.dataset](args.data_root)
        data.subset(args.train_subset, args.test_subset)  # validates the subset sizes before anything is written
    except (ValueError, DataNotFoundError, OutputExistsError) as exc:
        raise UsageError(str(exc)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    record = run_rgp(config, data, args.out, progress=not args.no_progress)
    counts = record["counts"]
    print(f"{args.model} {args.mask}: test accuracy {record['test_accuracy']:.4f}; kept {record['density']['pruned_layers']:.4f} "
          f"of pruned layers; params {counts['params']['pruned']}/{counts['params']['dense']}; "
          f"MACs {counts['macs']['pruned']}/{counts['macs']['dense']}; train {record['train_time_s']:.1f} s")
    print(f"wrote {args.out}/metrics.json")
    return 0


def _add_prune(cnn_sub) -> None:
    p = cnn_sub.add_parser("prune", help="structured filter pruning with one criterion, fine-tuning and compaction",
                           description=(
                               "Load (--checkpoint) or train a dense CNN, score the output channels of every prunable "
                               "convolution with one criterion, mask the lowest-scoring ones to a MAC target or a "
                               "per-layer fraction, fine-tune under the masks, then physically remove the pruned "
                               "channels (torch-pruning dependency graph). In CIFAR ResNets only the channels inside "
                               "each basic block are pruned: the block outputs are tied to the zero-padding "
                               "shortcut. Writes OUT/metrics.json (accuracy dense / masked before and after fine-tune "
                               "/ compact, params and MACs, CPU latency at batch 1 and 64 of masked and compact "
                               "models), OUT/masks.pt, OUT/compact.pt (state_dict) and OUT/architecture.json."),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet56", help="resnet20, resnet56, resnet110, vgg16_bn, convnet")
    p.add_argument("--dataset", default="cifar10", help="cifar10 or digits (scikit-learn's 8x8 digits)")
    p.add_argument("--criterion", default="l1", help=", ".join(CRITERIA))
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--mac-reduction", type=_density,
                        help="fraction of MACs to remove; one pruned fraction for all layers is searched "
                             "(default 0.5 when --fraction is not given)")
    budget.add_argument("--fraction", type=_density, help="pruned fraction of every prunable layer")
    p.add_argument("--checkpoint", type=Path,
                   help="dense model state_dict to start from (e.g. OUT/model.pt of 'cnn rgp --mask dense'); "
                        "without it the model is trained first")
    p.add_argument("--pretrain-epochs", type=_positive_int, default=10)
    p.add_argument("--pretrain-lr", type=_non_negative_float, default=0.1)
    p.add_argument("--finetune-epochs", type=_positive_int, default=2)
    p.add_argument("--finetune-lr", type=_non_negative_float, default=0.01)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--feature-images", type=_int_at_least(2), default=128,
                   help="training images whose activations hrank, chip, central and entropy see")
    p.add_argument("--sensitivity-images", type=_positive_int, default=500,
                   help="training images the sensitivity criterion measures accuracy drops on")
    p.add_argument("--latency-repeats", type=_positive_int, default=5, help="timed forward passes per model and batch")
    p.add_argument("--early-bird-window", type=_int_at_least(2),
                   help="end pre-training once the watched masks have settled over this many epochs "
                        "(early-bird tickets; default 5 when --early-bird-threshold is given; off when neither is)")
    p.add_argument("--early-bird-threshold", type=_non_negative_float,
                   help="largest fraction of a watched mask's entries that may differ between the newest and each "
                        "older mask of the window (default 0.1 when --early-bird-window is given)")
    p.add_argument("--early-bird-watch", default="channels,elements",
                   help="comma-separated parts the early-bird monitor watches: channels (BN-scaling channel masks), "
                        "elements (magnitude element masks), regions (ReLU region codes on --feature-images images)")
    _add_run_arguments(p, threads_help="torch CPU threads (latency is measured with these)")
    p.set_defaults(cnn_handler=_prune_command)


def _pretrain_early_bird(args: argparse.Namespace):
    """``(EarlyBirdConfig or None, watched parts)`` from the early-bird flags."""
    from gnnprune.masks import EarlyBirdConfig

    from .pretrain_early_bird import WatchedMask

    names = [name for name in args.early_bird_watch.split(",") if name]
    try:
        watch = tuple(WatchedMask(name) for name in names)
    except ValueError:
        raise ValueError(f"--early-bird-watch: unknown part in {args.early_bird_watch!r}; choose from "
                         f"{', '.join(part.value for part in WatchedMask)}") from None
    if args.early_bird_window is None and args.early_bird_threshold is None:
        return None, watch
    if args.checkpoint is not None:
        raise ValueError("--early-bird-window / --early-bird-threshold watch pre-training: drop --checkpoint")
    window = 5 if args.early_bird_window is None else args.early_bird_window
    threshold = 0.1 if args.early_bird_threshold is None else args.early_bird_threshold
    return EarlyBirdConfig(window=window, threshold=threshold), watch


def _prune_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.data import DataNotFoundError
    from gnnprune.io import OutputExistsError, check_new_folder, safe_torch_load

    from .experiment import IMAGE_DATASETS
    from .prune_flow import PruneRunConfig, run_prune
    from .train import CNNTrainConfig

    training = lambda epochs, lr, seed: CNNTrainConfig(  # noqa: E731
        epochs=epochs, batch_size=args.batch_size, lr=lr, weight_decay=args.weight_decay,
        augment=not args.no_augment, seed=seed)
    try:
        reduction = args.mac_reduction if args.mac_reduction is not None or args.fraction is not None else 0.5
        early_bird, watch = _pretrain_early_bird(args)
        config = PruneRunConfig(
            model=args.model, dataset=args.dataset, criterion=args.criterion, mac_reduction=reduction,
            fraction=args.fraction, checkpoint=None if args.checkpoint is None else str(args.checkpoint),
            pretrain=training(args.pretrain_epochs, args.pretrain_lr, args.seed),
            finetune=training(args.finetune_epochs, args.finetune_lr, args.seed),
            feature_images=args.feature_images, sensitivity_images=args.sensitivity_images,
            latency_repeats=args.latency_repeats, train_subset=args.train_subset, test_subset=args.test_subset,
            early_bird=early_bird, early_bird_watch=watch)
        data = IMAGE_DATASETS[args.dataset](args.data_root)
        data.subset(args.train_subset, args.test_subset)  # validates the subset sizes before anything is written
        if args.checkpoint is not None:
            from .models import build_cnn_model

            state = safe_torch_load(args.checkpoint)
            try:
                build_cnn_model(args.model, num_classes=data.num_classes,
                                in_channels=data.train_x.shape[1]).load_state_dict(state)
            except (RuntimeError, TypeError, AttributeError) as exc:
                raise ValueError(f"{args.checkpoint} is not a {args.model} state_dict for {args.dataset}: "
                                 f"{str(exc).splitlines()[0]}") from None
        check_new_folder(args.out)
    except FileNotFoundError as exc:
        raise UsageError(f"no such file: {exc.filename}") from None
    except (ValueError, DataNotFoundError, OutputExistsError) as exc:
        raise UsageError(str(exc)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    record = run_prune(config, data, args.out, progress=not args.no_progress)
    acc, counts, lat = record["accuracy"], record["counts"], record["latency_s"]
    print(f"{args.model} {args.criterion}: accuracy dense {acc['dense']:.4f}, masked {acc['masked_before_finetune']:.4f} "
          f"-> fine-tuned {acc['masked_after_finetune']:.4f}; MACs {counts['macs']['pruned']}/{counts['macs']['dense']}; "
          f"params {counts['params']['pruned']}/{counts['params']['dense']}; compact max |diff| "
          f"{record['compact_max_abs_diff']:.2e}; batch-64 latency masked {lat['batch_64']['masked'] * 1e3:.1f} ms, "
          f"compact {lat['batch_64']['compact'] * 1e3:.1f} ms ({lat['batch_64']['speedup']:.2f}x)")
    print(f"wrote {args.out}/metrics.json")
    return 0

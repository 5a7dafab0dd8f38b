"""The ``gnnprune cnn`` commands: ``train`` (a dense CNN, checkpointed every epoch, resumable),
``rgp`` (train under one-shot regular-graph block masks), ``prune`` (structured filter pruning,
fine-tuning, compaction), ``rmnet`` (ResNet -> plain network), ``analyse`` (layer modularity,
CKA / GBS similarity, ReLU gating complexity) and ``jackpot`` (a mask searched in frozen
pre-trained weights).

:func:`gnnprune.cli.build_parser` makes the ``cnn`` parser and calls :func:`add_commands` only when
the command line asks for ``cnn`` (or the whole parser is built), so ``gnnprune prune`` never imports
this package. Argument types, the parser class and :class:`~gnnprune.cli.UsageError` are gnnprune's.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from gnnprune.cli import (EARLY_BIRD_FLAGS, UsageError, _density, _int_at_least, _non_negative_float,
                          _non_negative_int, _Parser, _positive_int, early_bird_flags)

from .criteria import CRITERIA


def _add_run_arguments(p: argparse.ArgumentParser, threads_help: str) -> None:
    """Data set, subset, seed, run folder and runtime options shared by the ``cnn`` subcommands."""
    p.add_argument("--dataset", default="cifar10", help="cifar10 or digits (scikit-learn's 8x8 digits)")
    p.add_argument("--train-subset", type=_positive_int, help="class-stratified training subset size")
    p.add_argument("--test-subset", type=_positive_int, help="class-stratified test subset size")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--out", required=True, type=Path, help="run folder (must not exist or be empty)")
    p.add_argument("--data-root", type=Path, help="data folder holding cifar10/cifar10-jpeg.tar.gz (else $GNNPRUNE_DATA, ./data)")
    p.add_argument("--threads", type=_positive_int, help=threads_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@contextlib.contextmanager
def _input_errors(*also: type[Exception]):
    """Turn what checking a command's input raises (a missing file, a bad value, absent data, an
    existing run folder, and the exception types in ``also``) into one-line usage errors (exit 2)."""
    from gnnprune.data import DataNotFoundError
    from gnnprune.io import OutputExistsError

    try:
        yield
    except (ValueError, DataNotFoundError, OutputExistsError, *also) as exc:
        raise UsageError(str(exc)) from None
    except FileNotFoundError as exc:
        raise UsageError(f"no such file: {exc.filename}" if exc.filename else str(exc)) from None


def _add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """Batch size, augmentation and arithmetic of the commands that train."""
    from .train import Precision

    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--precision", choices=[m.value for m in Precision], default=Precision.FP32.value,
                   help="arithmetic of the training forward/backward pass (bf16: CPU autocast; evaluation in fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for training")


def _batch_training(args: argparse.Namespace) -> dict:
    """The :class:`~cnn_bridge.train.CNNTrainConfig` fields :func:`_add_batch_arguments` sets."""
    return {"batch_size": args.batch_size, "augment": not args.no_augment, "precision": args.precision,
            "channels_last": args.channels_last}


def add_commands(cnn: argparse.ArgumentParser) -> None:
    """Add the ``train``, ``rgp`` and ``prune`` subcommands to ``cnn``, the ``gnnprune cnn`` parser.

    Each sets ``cnn_handler``, which :func:`gnnprune.cli.main` calls with the parsed arguments.
    """
    cnn_sub = cnn.add_subparsers(dest="cnn_command", required=True, parser_class=_Parser)
    _add_train(cnn_sub)
    _add_rgp(cnn_sub)
    _add_prune(cnn_sub)
    _add_rmnet(cnn_sub)
    _add_analyse(cnn_sub)
    _add_jackpot(cnn_sub)


def _add_train(cnn_sub) -> None:
    from .train import Schedule

    p = cnn_sub.add_parser("train", help="train a dense CNN, checkpointed every epoch and resumable",
                           description=(
                               "Train a dense CNN with SGD (Nesterov momentum) and a per-step cosine or one-cycle "
                               "learning rate, optionally in bf16 autocast (weights and optimizer stay fp32, "
                               "evaluation is fp32) and channels-last memory. After every epoch OUT/checkpoint.pt "
                               "(model, optimizer, random generator, epoch) and OUT/history.json (per-epoch loss, "
                               "train and test accuracy) are written atomically; --resume continues from them "
                               "exactly. At the end OUT/model.pt (the final state_dict) and OUT/metrics.json."),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20", help="resnet20, resnet56, resnet110, vgg16_bn, convnet")
    p.add_argument("--epochs", type=_positive_int, default=40)
    p.add_argument("--lr", type=_non_negative_float, default=0.1, help="peak SGD learning rate")
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    p.add_argument("--schedule", choices=[s.value for s in Schedule], default=Schedule.COSINE.value,
                   help="cosine after a linear warm-up, or one-cycle (linear up from lr/25, linear down to 0)")
    p.add_argument("--warmup-epochs", type=_non_negative_float, default=1.0,
                   help="warm-up length in epochs (one-cycle: 0 means 30%% of the run)")
    p.add_argument("--label-smoothing", type=_non_negative_float, default=0.0)
    p.add_argument("--cutout", type=_non_negative_int, default=0, metavar="PIXELS",
                   help="zero a random PIXELS x PIXELS square of every training image after normalisation "
                        "(DeVries & Taylor: 16 on CIFAR-10); 0: off")
    p.add_argument("--init-from", type=Path, metavar="STATE_DICT",
                   help="start from these weights of the same model (model.pt or a checkpoint.pt) instead of "
                        "a random initialisation: a further learning-rate cycle, a warm restart")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from OUT/checkpoint.pt (give the same options)")
    _add_batch_arguments(p)
    _add_run_arguments(p, threads_help="torch CPU threads")
    p.set_defaults(cnn_handler=_train_command)


def _train_command(args: argparse.Namespace) -> int:
    import math

    import torch

    from gnnprune.io import check_new_folder

    from .experiment import IMAGE_DATASETS, TrainRunConfig, check_choice, run_training
    from .models import cnn_model_spec
    from .train import CHECKPOINT_FILE, CNNTrainConfig

    with _input_errors():
        cnn_model_spec(args.model)
        check_choice("dataset", args.dataset, IMAGE_DATASETS)
        if args.label_smoothing >= 1:
            raise ValueError(f"--label-smoothing must be < 1, got {args.label_smoothing}")
        if args.init_from is not None and not args.init_from.is_file():
            raise ValueError(f"--init-from {args.init_from}: no such file")
        data = IMAGE_DATASETS[args.dataset](args.data_root)
        subset = data.subset(args.train_subset, args.test_subset)  # validates the subset sizes
        steps_per_epoch = math.ceil(len(subset.train_y) / args.batch_size)
        train = CNNTrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                               warmup_steps=round(args.warmup_epochs * steps_per_epoch), seed=args.seed,
                               schedule=args.schedule, label_smoothing=args.label_smoothing, cutout=args.cutout,
                               eval_every_epoch=True, **_batch_training(args))
        config = TrainRunConfig(model=args.model, dataset=args.dataset, train=train,
                                train_subset=args.train_subset, test_subset=args.test_subset,
                                init_from=None if args.init_from is None else str(args.init_from))
        if args.resume:
            if not (args.out / CHECKPOINT_FILE).is_file():
                raise ValueError(f"--resume: {args.out / CHECKPOINT_FILE} does not exist")
        else:
            check_new_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        record = run_training(config, data, args.out, resume=args.resume, progress=not args.no_progress)
    except ValueError as exc:  # a checkpoint written with other settings, or a corrupt one
        raise UsageError(str(exc)) from None
    print(f"{args.model}: test accuracy {record['test_accuracy']:.4f} after {len(record['history'])} epochs; "
          f"train {record['train_time_s']:.1f} s")
    print(f"wrote {args.out}/model.pt and {args.out}/metrics.json")
    return 0


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
    p.add_argument("--model", default="resnet20",
                   help="resnet20, resnet56, resnet110, vgg16_bn, convnet, resnet50, ghost_resnet20, ghost_resnet56, "
                        "g_ghost_resnet20, g_ghost_resnet56")
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
    p.add_argument("--lr", type=_non_negative_float, default=0.1, help="peak SGD learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    _add_batch_arguments(p)
    _add_run_arguments(p, threads_help="torch CPU threads")
    p.set_defaults(cnn_handler=_rgp_command)


def _rgp_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.io import check_new_folder

    from .experiment import IMAGE_DATASETS, MASKS, RGPRunConfig, check_choice, run_rgp
    from .models import build_cnn_model, cnn_model_spec
    from .rgp import RGPConfig, check_groups
    from .train import CNNTrainConfig

    with _input_errors():
        cnn_model_spec(args.model)
        check_choice("mask", args.mask, MASKS)
        check_choice("dataset", args.dataset, IMAGE_DATASETS)
        if args.density is not None:
            rgp = RGPConfig(groups=args.groups, density=args.density, swaps=args.swaps)
        else:
            rgp = RGPConfig.from_degree(args.groups, 16 if args.degree is None else args.degree, swaps=args.swaps)
        config = RGPRunConfig(model=args.model, mask=args.mask, dataset=args.dataset, rgp=rgp,
                              train=CNNTrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                                   seed=args.seed, **_batch_training(args)),
                              train_subset=args.train_subset, test_subset=args.test_subset)
        if args.mask != "dense":
            check_groups(build_cnn_model(args.model), args.groups)
        check_new_folder(args.out)
        data = IMAGE_DATASETS[args.dataset](args.data_root)
        data.subset(args.train_subset, args.test_subset)  # validates the subset sizes before anything is written
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
    p.add_argument("--model", default="resnet56",
                   help="resnet20, resnet56, resnet110, rmnet20, rmnet56, rmnet110 (plain nets of 'cnn rmnet'), "
                        "vgg16_bn, convnet")
    p.add_argument("--criterion", default="l1", help=", ".join(CRITERIA))
    p.add_argument("--flow", default="score", choices=("score", "asc"),
                   help="score: mask the lowest-scoring channels, then fine-tune; asc: fine-tune while clustering and "
                        "reconstructing filters (ASCP), then merge each cluster into one channel")
    p.add_argument("--allocation", default="uniform", choices=("uniform", "snf"),
                   help="channels kept per layer: one fraction for all layers, or searched on training images held "
                        "out of --train-subset (SNF; needs --train-subset and a MAC reduction)")
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
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    p.add_argument("--feature-images", type=_int_at_least(2), default=128,
                   help="training images whose activations hrank, chip, central and entropy see")
    p.add_argument("--sensitivity-images", type=_positive_int, default=500,
                   help="training images the sensitivity criterion measures accuracy drops on")
    p.add_argument("--latency-repeats", type=_positive_int, default=5, help="timed forward passes per model and batch")
    p.add_argument("--early-bird-window", type=_int_at_least(2),
                   help="end pre-training once the watched masks have settled over this many epochs "
                        "(early-bird tickets; default 5 when another early-bird flag is given; off when none is)")
    p.add_argument("--early-bird-threshold", type=_non_negative_float,
                   help="largest fraction of a watched mask's entries that may differ between the newest and each "
                        "older mask of the window (default 0.1 when another early-bird flag is given)")
    p.add_argument("--early-bird-min-epochs", type=_int_at_least(0),
                   help="pre-training epochs before the early-bird monitor may fire (default 0; implies the "
                        "monitor with the default window and threshold)")
    p.add_argument("--early-bird-watch", default="channels,elements",
                   help="comma-separated parts the early-bird monitor watches: channels (BN-scaling channel masks), "
                        "elements (magnitude element masks), regions (ReLU region codes on --feature-images images)")
    _add_batch_arguments(p)
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
    given = early_bird_flags(args)
    if not given:
        return None, watch
    if args.checkpoint is not None:
        raise ValueError(f"{EARLY_BIRD_FLAGS} watch pre-training: drop --checkpoint")
    return EarlyBirdConfig(**given), watch


def _prune_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.io import check_new_folder

    from .experiment import IMAGE_DATASETS
    from .prune_flow import PruneRunConfig, run_prune
    from .train import CNNTrainConfig

    training = lambda epochs, lr, seed: CNNTrainConfig(  # noqa: E731
        epochs=epochs, lr=lr, weight_decay=args.weight_decay, seed=seed, **_batch_training(args))
    with _input_errors():
        reduction = args.mac_reduction if args.mac_reduction is not None or args.fraction is not None else 0.5
        early_bird, watch = _pretrain_early_bird(args)
        config = PruneRunConfig(
            model=args.model, dataset=args.dataset, criterion=args.criterion, mac_reduction=reduction,
            fraction=args.fraction, checkpoint=None if args.checkpoint is None else str(args.checkpoint),
            pretrain=training(args.pretrain_epochs, args.pretrain_lr, args.seed),
            finetune=training(args.finetune_epochs, args.finetune_lr, args.seed),
            feature_images=args.feature_images, sensitivity_images=args.sensitivity_images,
            latency_repeats=args.latency_repeats, train_subset=args.train_subset, test_subset=args.test_subset,
            flow=args.flow, allocation=args.allocation, early_bird=early_bird, early_bird_watch=watch)
        data = IMAGE_DATASETS[args.dataset](args.data_root)
        data.subset(args.train_subset, args.test_subset)  # validates the subset sizes before anything is written
        if args.checkpoint is not None:
            _load_model(args.model, args.checkpoint, data, args.dataset)  # refuses a file that does not fit
        check_new_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = run_prune(config, data, args.out, progress=not args.no_progress)
    acc, counts, lat = record["accuracy"], record["counts"], record["latency_s"]
    masked = "n/a (asc)" if acc["masked_before_finetune"] is None else f"{acc['masked_before_finetune']:.4f}"
    print(f"{args.model} {args.criterion}: accuracy dense {acc['dense']:.4f}, masked {masked} "
          f"-> fine-tuned {acc['masked_after_finetune']:.4f}; MACs {counts['macs']['pruned']}/{counts['macs']['dense']}; "
          f"params {counts['params']['pruned']}/{counts['params']['dense']}; compact max |diff| "
          f"{record['compact_max_abs_diff']:.2e}; batch-64 latency masked {lat['batch_64']['masked'] * 1e3:.1f} ms, "
          f"compact {lat['batch_64']['compact'] * 1e3:.1f} ms ({lat['batch_64']['speedup']:.2f}x)")
    print(f"wrote {args.out}/metrics.json")
    return 0


def _load_model(name: str, checkpoint: Path, data, dataset: str) -> "torch.nn.Module":
    """``name`` built for ``data`` (the data set called ``dataset``) with the state_dict in
    ``checkpoint``, in eval mode (``ValueError`` naming the file when it does not fit)."""
    from .models import build_cnn_model, load_weights

    model = build_cnn_model(name, num_classes=data.num_classes, in_channels=data.train_x.shape[1])
    return load_weights(model, checkpoint, f"{name} for {dataset}").eval()


def _add_rmnet(cnn_sub) -> None:
    p = cnn_sub.add_parser("rmnet", help="convert a CIFAR ResNet into the plain network computing the same function",
                           description=(
                               "RMNet: remove the residual connections of a CIFAR ResNet exactly. Each block's first "
                               "convolution gets C_in Dirac filters that carry the block input through its middle "
                               "layer, the shortcut (identity or subsample + zero padding) becomes centre-tap kernels "
                               "of the second convolution, and batch norms pass the carried channels through with "
                               "statistics measured on training images. Writes OUT/model.pt (state_dict of "
                               "rmnetN, usable as 'cnn prune --model rmnetN --checkpoint OUT/model.pt', where every "
                               "convolution is prunable) and OUT/metrics.json (max |difference| and accuracy of "
                               "both networks on test images, params and MACs)."),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20", help="resnet20, resnet56 or resnet110")
    p.add_argument("--checkpoint", type=Path, required=True, help="the ResNet's state_dict")
    p.add_argument("--calibration-images", type=_positive_int, default=512,
                   help="training images whose statistics the pass-through batch norms get")
    p.add_argument("--check-images", type=_positive_int, default=1000,
                   help="class-stratified test images both networks are compared on")
    _add_run_arguments(p, threads_help="torch CPU threads")
    p.set_defaults(cnn_handler=_rmnet_command)


def _rmnet_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.io import atomic_torch_save, atomic_write_json, check_new_folder

    from .counting import count_model
    from .data import normalise
    from .experiment import IMAGE_DATASETS, check_choice
    from .rmnet import PLAIN_MODELS, resnet_to_plain
    from .train import evaluate_cnn

    with _input_errors():
        check_choice("model", args.model, PLAIN_MODELS)
        check_choice("dataset", args.dataset, IMAGE_DATASETS)
        data = IMAGE_DATASETS[args.dataset](args.data_root).subset(args.train_subset, args.test_subset, seed=args.seed)
        resnet = _load_model(args.model, args.checkpoint, data, args.dataset)
        check_new_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    calibration = normalise(data.train_x[:args.calibration_images], data.mean, data.std)
    plain = resnet_to_plain(resnet, calibration.split(128))
    checked = data.subset(None, min(args.check_images, len(data.test_y)), seed=args.seed)
    probe_x, probe_y = checked.test_x, checked.test_y
    with torch.no_grad():
        diff = max(float((plain(x) - resnet(x)).abs().max())
                   for x in normalise(probe_x, data.mean, data.std).split(250))
    shape = tuple(data.train_x.shape[1:])
    counts = {name: {"params": c["params"]["dense"], "macs": c["macs"]["dense"]}
              for name, c in (("resnet", count_model(resnet, shape)), ("plain", count_model(plain, shape)))}
    record = {"model": args.model, "plain_model": PLAIN_MODELS[args.model], "checkpoint": str(args.checkpoint),
              "data": data.name, "calibration_images": len(calibration), "check_images": len(probe_x),
              "max_abs_diff": diff,
              "accuracy": {"resnet": evaluate_cnn(resnet, probe_x, probe_y, data.mean, data.std),
                           "plain": evaluate_cnn(plain, probe_x, probe_y, data.mean, data.std)},
              "counts": counts}
    atomic_torch_save(plain.state_dict(), args.out / "model.pt")
    atomic_write_json(args.out / "metrics.json", record)
    print(f"{args.model} -> {record['plain_model']}: max |difference| {diff:.2e} on {len(probe_x)} test images; "
          f"accuracy {record['accuracy']['resnet']:.4f} / {record['accuracy']['plain']:.4f}; MACs "
          f"{counts['resnet']['macs']} -> {counts['plain']['macs']}")
    print(f"wrote {args.out}/model.pt")
    return 0


def _add_analyse(cnn_sub) -> None:
    p = cnn_sub.add_parser("analyse", help="layer modularity, CKA / GBS similarity and ReLU gating complexity",
                           description=(
                               "On a batch of test images: the class modularity of the stem's and every block's "
                               "outputs (cosine k-NN graph, Newman modularity against the true classes), the linear "
                               "CKA and graph-based similarity (GBS) matrices between those layers, and the entropy "
                               "of every ReLU layer's gating states with their information about input and label "
                               "(docs/cnn.md). Writes OUT/analysis.json and heat maps OUT/modularity.png, OUT/cka.png, "
                               "OUT/gbs.png, OUT/complexity.png."),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20", help="a CIFAR ResNet (resnet20, ...) or its plain net (rmnet20, ...)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="the model's state_dict")
    source.add_argument("--compact", type=Path, help="a 'cnn prune' run folder: analyse its compact model")
    p.add_argument("--images", type=_int_at_least(4), default=500, help="test images analysed (class-stratified)")
    p.add_argument("--k", type=_positive_int, default=3, help="neighbours per image in the modularity graph")
    _add_run_arguments(p, threads_help="torch CPU threads")
    p.set_defaults(cnn_handler=_analyse_command)


def _analyse_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.io import atomic_write_json, check_new_folder

    from .compact import load_compact
    from .data import normalise
    from .experiment import IMAGE_DATASETS, check_choice
    from .layer_analysis import ANALYSABLE, analyse, plot_analysis

    with _input_errors(TypeError):
        check_choice("model", args.model, ANALYSABLE)
        check_choice("dataset", args.dataset, IMAGE_DATASETS)
        data = IMAGE_DATASETS[args.dataset](args.data_root).subset(args.train_subset, args.test_subset, seed=args.seed)
        if args.images > len(data.test_y):
            raise ValueError(f"--images {args.images} exceeds the {len(data.test_y)} test images")
        if args.k >= args.images:
            raise ValueError(f"--k {args.k} must be below --images {args.images}")
        if args.checkpoint is not None:
            model = _load_model(args.model, args.checkpoint, data, args.dataset)
        else:
            model = load_compact(args.compact, tuple(data.train_x.shape[1:]))
        check_new_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    picked = data.subset(None, args.images, seed=args.seed)
    images = normalise(picked.test_x, data.mean, data.std)
    report = analyse(model, images, picked.test_y, k=args.k)
    report.update({"model": args.model, "source": str(args.checkpoint or args.compact), "data": data.name})
    atomic_write_json(args.out / "analysis.json", report)
    plot_analysis(report, args.out)
    print("modularity " + " ".join(f"{q:.4f}" for q in report["modularity"]))
    print(f"wrote {args.out}/analysis.json and heat maps")
    return 0


def _add_jackpot(cnn_sub) -> None:
    p = cnn_sub.add_parser("jackpot", help="search a sparse mask in a pre-trained CNN's frozen weights (lottery jackpots)",
                           description=(
                               "Load (--checkpoint) or train a dense CNN, cut every conv / linear weight but the "
                               "classifier's to --sparsity by magnitude, then move the masks by a score search on "
                               "training images with the weights frozen (straight-through scores, exact swaps after "
                               "every step). Batch-norm statistics are re-estimated on the training images for the "
                               "magnitude mask and the jackpot alike. Writes OUT/metrics.json (test accuracy dense, "
                               "magnitude, magnitude with re-estimated statistics, jackpot; whether every parameter "
                               "is bit-identical), OUT/masks.pt and OUT/model.pt."),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20", help="resnet20, resnet56, resnet110, vgg16_bn, convnet")
    p.add_argument("--sparsity", type=_density, default=0.9, help="fraction of every searched layer's weights removed")
    p.add_argument("--checkpoint", type=Path,
                   help="dense model state_dict to start from; without it the model is trained first")
    p.add_argument("--pretrain-epochs", type=_positive_int, default=10)
    p.add_argument("--pretrain-lr", type=_non_negative_float, default=0.1)
    p.add_argument("--search-epochs", type=_positive_int, default=2, help="passes over the training images")
    p.add_argument("--score-lr", type=_non_negative_float, default=0.1, help="peak SGD learning rate of the scores")
    p.add_argument("--finetune-epochs", type=_non_negative_int, default=0,
                   help="train the kept weights under the found masks afterwards (0: off)")
    p.add_argument("--finetune-lr", type=_non_negative_float, default=0.01)
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4, help="pre-training weight decay")
    _add_batch_arguments(p)
    _add_run_arguments(p, threads_help="torch CPU threads")
    p.set_defaults(cnn_handler=_jackpot_command)


def _jackpot_command(args: argparse.Namespace) -> int:
    import torch

    from gnnprune.io import check_new_folder
    from gnnprune.masks import ScoreSearchConfig

    from .experiment import IMAGE_DATASETS
    from .jackpot import JackpotRunConfig, run_jackpot
    from .train import CNNTrainConfig

    with _input_errors():
        config = JackpotRunConfig(
            model=args.model, dataset=args.dataset, sparsity=args.sparsity,
            checkpoint=None if args.checkpoint is None else str(args.checkpoint),
            pretrain=CNNTrainConfig(epochs=args.pretrain_epochs, lr=args.pretrain_lr, weight_decay=args.weight_decay,
                                    seed=args.seed, **_batch_training(args)),
            search_epochs=args.search_epochs, batch_size=args.batch_size, augment=not args.no_augment,
            search=ScoreSearchConfig(lr=args.score_lr), finetune_epochs=args.finetune_epochs,
            finetune_lr=args.finetune_lr, train_subset=args.train_subset, test_subset=args.test_subset)
        data = IMAGE_DATASETS[args.dataset](args.data_root)
        data.subset(args.train_subset, args.test_subset)  # validates the subset sizes before anything is written
        if args.checkpoint is not None:
            _load_model(args.model, args.checkpoint, data, args.dataset)  # refuses a file that does not fit
        check_new_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = run_jackpot(config, data, args.out, progress=not args.no_progress)
    acc = record["accuracy"]
    print(f"{args.model} jackpot at {record['sparsity']['searched_layers']:.4f} sparsity: test accuracy dense "
          f"{acc['dense']:.4f}, magnitude {acc['magnitude']:.4f} (re-estimated statistics "
          f"{acc['magnitude_bn_reestimated']:.4f}), jackpot {acc['jackpot']:.4f}"
          + (f", fine-tuned {acc['jackpot_finetuned']:.4f}" if "jackpot_finetuned" in acc else "")
          + f"; weights unchanged: {record['weights_unchanged']}")
    print(f"wrote {args.out}/metrics.json")
    return 0

"""``gnnprune`` command line.

Every argument is validated, the data set is loaded and the output folder is checked before
anything is written. Errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except ``None``: the library's configuration decides then (the help says how)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


class UsageError(Exception):
    """Bad input detected after parsing (reported like an argparse error)."""


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {text}")
    return value


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _open_fraction(what: str = ""):
    """Parser of a number strictly between 0 and 1 (``what`` names it in the error)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"{what + ' ' if what else ''}must be in (0, 1), got {text}")
        return value

    return parse


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


_fraction = _open_fraction()
_density = _open_fraction("density")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", type=Path, help="data folder (else $GNNPRUNE_DATA, ./data, the embedded Cora/CiteSeer)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``gnnprune`` parser. The ``cnn`` subcommands come from :func:`cnn_bridge.cli.add_commands`,
    imported only when ``argv`` (the command line to parse) starts with ``cnn``; ``None``: every command."""
    from .copruning import EdgeRanking, FeatureScore, WeightGranularity
    from .masks import WeightDistribution
    from .data import DATASETS
    from .methods import METHODS, CGPConfig, JackpotConfig, UGSConfig
    from .nn import MODELS
    from .training import TrainConfig

    parser = _Parser(prog="gnnprune", description=(
        "Co-prune graph neural networks: edges of the graph, input feature columns and model "
        "weights, each to its own sparsity, in one training run with gradient-informed regrowth."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("prune", help="train a GNN while co-pruning edges, features and weights",
                       description=(
                           "Train MODEL on DATASET while pruning weights, edges and feature columns on a cubic "
                           "schedule with regrowth (CGP). All sparsities 0 is a dense run. Writes OUT/metrics.json "
                           "(config, per-seed results, mean/std summary) and OUT/seed-K/{metrics.json, model.pt, "
                           "masks.pt, pruned_graph.pt}; prints a table to stdout and a progress bar to stderr. "
                           "Options not given keep the library's configuration "
                           "(gnnprune.ExperimentConfig.for_model: the model's and the method's defaults)."),
                       formatter_class=_HelpFormatter)
    p.add_argument("--dataset", required=True,
                   help=f"one of {', '.join(DATASETS)}; synthetic takes options: synthetic:num_nodes=5000,homophily=0.7")
    p.add_argument("--model", default="gcn", help=f"one of {', '.join(sorted(MODELS))}")
    p.add_argument("--method", choices=METHODS,
                   help="dense; random (random masks fixed from the start); oneshot (train dense, prune by "
                        "magnitude once, fine-tune); ugs (iterative lottery tickets, UGS); colt (tickets of two copies trained "
                        "on halves of the classes, intersected, on UGS's rounds); cgp (ours); jackpot "
                        "(train dense, then search a mask in the frozen weights: lottery jackpots). "
                        "Default: cgp if any sparsity is > 0, else dense")
    p.add_argument("--weight-sparsity", type=_sparsity, default=0.0, help="fraction of weights removed in every layer")
    p.add_argument("--edge-sparsity", type=_sparsity, default=0.0, help="fraction of undirected edges removed")
    p.add_argument("--feature-sparsity", type=_sparsity, default=0.0, help="fraction of input feature columns removed")
    p.add_argument("--epochs", type=_positive_int, help="training epochs (default: the model's, 200 for gcn)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_non_negative_int, default=0)
    seeds.add_argument("--seeds", type=_seeds, help="comma-separated seeds, e.g. 0,1,2,3,4 (adds mean ± std)")
    p.add_argument("--out", required=True, type=Path, help="run folder (must not exist or be empty)")
    _add_data_root(p)
    p.add_argument("--download", action="store_true",
                   help="download a public data set that is under no data root (needs a network)")
    g = p.add_argument_group("model (defaults: the model's usual hyperparameters)")
    g.add_argument("--hidden", type=_positive_int, help="hidden width")
    g.add_argument("--layers", type=_positive_int, help="number of graph layers")
    g.add_argument("--dropout", type=_sparsity, help="dropout probability")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model-specific option, e.g. K=10 or alpha=0.1 (repeatable)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=_non_negative_float, help="learning rate (default: the model's)")
    g.add_argument("--weight-decay", type=_non_negative_float, help="weight decay (default: the model's)")
    g.add_argument("--pseudo-label-weight", type=_non_negative_float,
                   help="weight of the self-training term on unlabelled nodes (0: plain supervised; default: "
                        "the method's, 0.3 for cgp, 0 for the baselines as published)")
    g.add_argument("--pseudo-label-warmup", type=_non_negative_int,
                   help="epochs over which that weight ramps up from 0 (default: epochs // 4)")
    g.add_argument("--gate-lr", type=_non_negative_float,
                   help=f"learning rate of the edge logits and feature gates (default {TrainConfig.gate_lr})")
    g.add_argument("--edge-gate-lr", type=_non_negative_float, help="learning rate of the edge logits (default: --gate-lr)")
    g.add_argument("--feature-gate-lr", type=_non_negative_float,
                   help="learning rate of the feature gates (default: --gate-lr; 0 freezes them at 1)")
    g = p.add_argument_group("pruning schedule")
    g.add_argument("--prune-start", type=_non_negative_int, help="first mask update epoch (default: epochs // 20)")
    g.add_argument("--prune-end", type=_non_negative_int, help="last mask update epoch (default: 3 * epochs // 4)")
    g.add_argument("--update-every", type=_positive_int,
                   help=f"epochs between mask updates (default {CGPConfig.update_every})")
    g.add_argument("--edge-prior", type=_non_negative_float,
                   help="CGP: L2 pull of the edge logits towards their initial value, lambda/2 * sum (l - l0)^2 "
                        "(default: the model's, 1e-4 for gcn2, else 0)")
    g.add_argument("--regrow-fraction", type=float,
                   help="initial fraction of live entries swapped per update (cosine-decayed; "
                        f"default {CGPConfig.regrow_fraction})")
    g.add_argument("--edge-ranking", choices=[r.value for r in EdgeRanking],
                   help="cgp: prune each node's weakest edges (local: an edge's score ranked among its "
                        f"endpoints' edges) or the graph's weakest (global); default {CGPConfig.edge_ranking.value}")
    g.add_argument("--feature-score", choices=[f.value for f in FeatureScore],
                   help="cgp: score feature columns by |gate| x ||weight row|| x the column's L1 mass over all "
                        "nodes (contribution) or without that mass (magnitude); default "
                        f"{CGPConfig.feature_score.value}")
    g.add_argument("--weight-structure", choices=[g.value for g in WeightGranularity],
                   help="prune single weights (element, the default), or whole hidden units (unit: a unit's column, "
                        "bias and norm entries and the rows that read it, together; --weight-sparsity is then the "
                        "fraction of hidden units removed; class outputs are never pruned)")
    g.add_argument("--weight-distribution", choices=[d.value for d in WeightDistribution],
                   help="spread --weight-sparsity evenly over the weight tensors, by ERK (small tensors "
                        "denser, same total), or by one ranking of all weights (global); default: the model's "
                        "(erk for gat and appnp, else uniform; ugs, colt and unit: uniform)"),
    g = p.add_argument_group("baselines")
    g.add_argument("--finetune-epochs", type=_positive_int,
                   help="oneshot: epochs after the cut (default: --epochs); jackpot: epochs of training the kept "
                        "weights after the search (default: none, the weights stay the dense model's)")
    g.add_argument("--jackpot-from", type=Path, metavar="RUN_DIR",
                   help="jackpot: take each seed's dense model from this finished dense run folder instead of "
                        "training it (edges and features are searched only if it learned edge weights and gates)")
    g.add_argument("--search-epochs", type=_positive_int,
                   help=f"jackpot: full-batch score-search steps (default {JackpotConfig.search_epochs})")
    g.add_argument("--score-lr", type=_positive_float,
                   help=f"jackpot: peak SGD learning rate of the scores, cosine-decayed (default {JackpotConfig().search.lr})")
    g.add_argument("--teacher-weight", type=_non_negative_float,
                   help="jackpot: weight of the cross-entropy to the dense model's predictions on unlabelled nodes "
                        f"in the search loss (default {JackpotConfig.teacher_weight})")
    g.add_argument("--early-bird-window", type=_int_at_least(2),
                   help="oneshot: end the dense phase (ugs: each round's mask learning) once the masks the pruning "
                        "would pick have settled over this many epochs (early-bird tickets; default 5 when "
                        "another early-bird flag is given; off when none is)")
    g.add_argument("--early-bird-threshold", type=_non_negative_float,
                   help="oneshot, ugs: largest fraction of mask entries (per part) that may differ between the "
                        "newest mask and each older one of the window for the masks to count as settled "
                        "(default 0.1 when another early-bird flag is given)")
    g.add_argument("--early-bird-min-epochs", type=_non_negative_int,
                   help="oneshot, ugs: epochs the dense phase (ugs: each round) trains before the early-bird monitor "
                        "may fire (default 0; implies the monitor with the default window and threshold)")
    g.add_argument("--ugs-edge-rate", type=_fraction,
                   help=f"ugs, colt: fraction of remaining edges pruned per round (default {UGSConfig.edge_rate})")
    g.add_argument("--ugs-weight-rate", type=_fraction,
                   help=f"ugs, colt: fraction of remaining weights pruned per round (default {UGSConfig.weight_rate})")
    g.add_argument("--ugs-feature-rate", type=_fraction,
                   help=f"ugs, colt: fraction of remaining features pruned per round (default {UGSConfig.feature_rate})")
    g.add_argument("--ugs-l1", type=_non_negative_float,
                   help=f"ugs, colt: L1 coefficient of every soft mask (default {UGSConfig.edge_l1})")
    g.add_argument("--ugs-mask-noise", type=_non_negative_float,
                   help="ugs, colt: each round starts the soft masks at 1 times (1 + u), u uniform in (-C, C), so "
                        f"that masks the loss leaves alone do not stay tied (default {UGSConfig.mask_noise}, as "
                        "UGS's reference; 0: exactly 1)")
    g = p.add_argument_group("run")
    g.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--dist-timeout", type=_positive_int, default=600,
                   help="under torchrun: seconds the rendezvous and every collective wait for the other ranks before "
                        "the run stops (see docs/distributed.md)")
    _add_checkpoint_arguments(p)
    _add_minibatch_arguments(p)
    cnn = sub.add_parser("cnn", help="CNN sparsification on the same mask engine (cnn_bridge)")
    if argv is None or argv[:1] == ["cnn"]:
        from cnn_bridge.cli import add_commands

        add_commands(cnn)
    _add_export_commands(sub)
    return parser


def _add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("checkpoints and resume", (
        "Each seed is checkpointed to OUT/seed-K/checkpoint.pt. SIGINT / SIGTERM finish the current epoch, "
        "write a checkpoint, mark OUT/metrics.json 'interrupted', print the resume command and exit 130 / 143."))
    g.add_argument("--checkpoint-every", type=_non_negative_int, default=50,
                   help="epochs between checkpoints (0: only at the end of each seed and when interrupted)")
    g.add_argument("--resume", action="store_true",
                   help="continue the unfinished run folder OUT; all other arguments must equal the original "
                        "command's (use the same --threads for bit-identical results)")


def _add_minibatch_arguments(p: argparse.ArgumentParser) -> None:
    from .loader import LOADERS

    g = p.add_argument_group("mini-batch training (for graphs too large for full-batch)")
    g.add_argument("--batch-size", type=_int_at_least(2),
                   help="nodes per batch (none: full-batch); masks stay global, each batch sees its kept "
                        "edges and features")
    g.add_argument("--loader", choices=sorted(LOADERS), default="random-nodes",
                   help="random-nodes: induced subgraphs of random node parts; neighbors: sampled "
                        "neighbourhoods of --batch-size seed nodes (both plain torch)")
    g.add_argument("--fanout", type=_fanouts, default=(10, 10),
                   help="neighbors loader: edges sampled per node at each hop, comma-separated (default 10,10)")


def _minibatch_config(args: argparse.Namespace):
    from .loader import MiniBatchConfig

    return None if args.batch_size is None else MiniBatchConfig(args.batch_size, args.loader, args.fanout)


def _fanouts(text: str) -> tuple[int, ...]:
    try:
        fanouts = tuple(int(part) for part in text.split(","))
    except ValueError:
        fanouts = ()
    if not fanouts or any(f < 1 for f in fanouts):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas (e.g. 10,10), got {text!r}")
    return fanouts


def _config_from_args(args: argparse.Namespace):
    """The library's configuration (:meth:`ExperimentConfig.for_model`) with the fields the flags set."""
    from .copruning import PruneTargets, WeightGranularity
    from .masks import WeightDistribution
    from .data import check_dataset_name
    from .config import ExperimentConfig

    try:
        check_dataset_name(args.dataset)
        options = _options(args.option)
        targets = PruneTargets(args.weight_sparsity, args.edge_sparsity, args.feature_sparsity)
        granularity = ({} if args.weight_structure is None
                       else {"weight_granularity": WeightGranularity(args.weight_structure)})
        config = ExperimentConfig.for_model(args.model, dataset=args.dataset, method=args.method, targets=targets,
                                            epochs=args.epochs, minibatch=_minibatch_config(args),
                                            seeds=args.seeds if args.seeds is not None else (args.seed,), **granularity)
        enum_or_none = lambda kind, value: None if value is None else kind(value)  # noqa: E731
        early_bird = _early_bird_config(args)
        return config.overridden(
            model={"hidden_channels": args.hidden, "num_layers": args.layers, "dropout": args.dropout,
                   "options": {**config.model.options, **options} if options else None},
            train={"lr": args.lr, "weight_decay": args.weight_decay, "pseudo_label_weight": args.pseudo_label_weight,
                   "pseudo_label_warmup": args.pseudo_label_warmup, "gate_lr": args.gate_lr,
                   "edge_gate_lr": args.edge_gate_lr, "feature_gate_lr": args.feature_gate_lr},
            weight_distribution=enum_or_none(WeightDistribution, args.weight_distribution),
            cgp={"prune_start": args.prune_start, "prune_end": args.prune_end, "update_every": args.update_every,
                 "regrow_fraction": args.regrow_fraction, "edge_ranking": args.edge_ranking,
                 "edge_prior": args.edge_prior, "feature_score": args.feature_score},
            oneshot={"finetune_epochs": args.finetune_epochs,
                     "early_bird": early_bird if args.method == "oneshot" else None},
            jackpot=_jackpot_config(args, config),
            ugs={"edge_rate": args.ugs_edge_rate, "weight_rate": args.ugs_weight_rate,
                 "feature_rate": args.ugs_feature_rate, "edge_l1": args.ugs_l1, "weight_l1": args.ugs_l1,
                 "feature_l1": args.ugs_l1, "mask_noise": args.ugs_mask_noise,
                 "early_bird": early_bird if args.method == "ugs" else None},
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _jackpot_config(args: argparse.Namespace, config):
    """The jackpot settings the flags give (``None`` when no flag is given); the flags are
    refused with another method, a ``--jackpot-from`` run must be a dense run of the same model and data."""
    import dataclasses

    given = [flag for flag, value in (("--jackpot-from", args.jackpot_from), ("--search-epochs", args.search_epochs),
                                      ("--score-lr", args.score_lr),
                                      ("--teacher-weight", args.teacher_weight)) if value is not None]
    if args.method != "jackpot":
        if given:
            raise ValueError(f"{given[0]} applies to --method jackpot only")
        return None
    jackpot = config.jackpot
    if args.score_lr is not None:
        jackpot = dataclasses.replace(jackpot, search=dataclasses.replace(jackpot.search, lr=args.score_lr))
    if args.jackpot_from is not None:
        from .experiment import learns_gates
        from .runs import RunFileError, run_config

        try:
            source = run_config(args.jackpot_from)
        except RunFileError as exc:
            raise ValueError(f"--jackpot-from: {exc}") from None
        if source.dataset != config.dataset or source.model is None or source.model.name != config.model.name:
            raise ValueError(f"--jackpot-from {args.jackpot_from} is a run of "
                             f"{source.model.name if source.model else 'a custom model'} on {source.dataset!r}, "
                             f"not of {config.model.name} on {config.dataset!r}")
        if not source.targets.is_dense:
            raise ValueError(f"--jackpot-from {args.jackpot_from} is a pruned run ({source.method.value}); "
                             "give a dense one (gnnprune prune --method dense)")
        jackpot = dataclasses.replace(jackpot, from_run=str(args.jackpot_from), dense_gates=learns_gates(source))
        missing = [name for name in args.seeds or (args.seed,) if not (args.jackpot_from / f"seed-{name}").is_dir()]
        if missing:
            raise ValueError(f"--jackpot-from {args.jackpot_from} has no seed-{missing[0]} folder")
    if args.teacher_weight is not None:
        jackpot = dataclasses.replace(jackpot, teacher_weight=args.teacher_weight)
    return dataclasses.replace(jackpot, search_epochs=args.search_epochs or jackpot.search_epochs,
                               finetune_epochs=args.finetune_epochs or jackpot.finetune_epochs)


#: the flags :func:`early_bird_flags` reads, as error messages name them
EARLY_BIRD_FLAGS = "--early-bird-window / --early-bird-threshold / --early-bird-min-epochs"


def early_bird_flags(args: argparse.Namespace) -> dict:
    """The early-bird settings given on the command line (``EarlyBirdConfig`` fields; empty: monitor off)."""
    return {name: value for name, value in (("window", args.early_bird_window),
                                            ("threshold", args.early_bird_threshold),
                                            ("min_epochs", args.early_bird_min_epochs)) if value is not None}


def _early_bird_config(args: argparse.Namespace):
    """The early-bird monitor's settings, or ``None`` when no early-bird flag is given."""
    from .masks import EarlyBirdConfig

    given = early_bird_flags(args)
    if not given:
        return None
    if args.method not in ("oneshot", "ugs"):
        raise ValueError(f"{EARLY_BIRD_FLAGS} apply to --method oneshot and ugs only")
    return EarlyBirdConfig(**given)


def _options(items: list[str]) -> dict:
    """``["K=10", "alpha=0.1", "concat=false"]`` -> ``{"K": 10, "alpha": 0.1, "concat": False}``."""
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"bad --option {item!r}; use KEY=VALUE")
        lowered = text.lower()
        if lowered in ("true", "false"):
            options[key] = lowered == "true"
            continue
        for cast in (int, float):
            try:
                options[key] = cast(text)
                break
            except ValueError:
                continue
        else:
            options[key] = text
    return options


def _prune(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import NonFiniteError, StopRequest, TrainingInterrupted
    from .distributed import MaskMismatchError, RankFailure, shared_graph
    from .experiment import plan_resume, run_experiment
    from .io import OutputExistsError, check_new_folder

    config = _config_from_args(args)
    world = _join_world(args)
    writer = world is None or world.is_writer  # rank 0 checks and writes OUT, prints results
    try:
        if not args.resume and writer:
            check_new_folder(args.out)
    except OutputExistsError as exc:
        raise UsageError(str(exc)) from None
    data = _load_data(args) if world is None else shared_graph(lambda: _load_data(args), world)
    _check_model(config, data)
    try:
        plan = plan_resume(config, data, args.out, 1 if world is None else world.world_size) \
            if args.resume and writer else None
    except ValueError as exc:  # ResumeError, CheckpointError
        raise UsageError(str(exc)) from None
    if world is not None:
        plan = world.broadcast_object(plan)
    if args.threads:
        torch.set_num_threads(args.threads)
    if writer:
        print(_row(("seed", "method", "test", "val", "best_ep", "w_sp", "e_sp", "f_sp", "MACs", "train_s", "infer_ms")))

    def show(m: dict) -> None:
        if not writer:
            return
        sp = m["sparsity"]
        print(_row((m["seed"], m["method"], f"{m['test']:.4f}", f"{m['val']:.4f}", m["best_epoch"],
                    f"{sp['weights']:.4f}", f"{sp['edges']:.4f}", f"{sp['features']:.4f}",
                    f"{m['macs']['ratio']:.4f}", f"{m['train_time_s']:.2f}", f"{1000 * m['inference_time_s']:.2f}")),
              flush=True)

    stop = StopRequest()
    resume_argv = [*getattr(args, "argv", []), *([] if args.resume else ["--resume"])]
    resume_command = "python -m gnnprune " + shlex.join(resume_argv)
    try:
        with stop.installed():
            record = run_experiment(config, data, args.out, progress=not args.no_progress, on_seed=show,
                                    checkpoint_every=args.checkpoint_every, resume=plan, should_stop=stop,
                                    world=world)
    except (TrainingInterrupted, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            where = "aborted; a resume continues from the last checkpoint"
        elif exc.epoch >= 0:
            where = f"interrupted after epoch {exc.epoch} of seed {exc.seed}, checkpoint {exc.checkpoint}"
        else:
            where = f"interrupted before seed {exc.seed}"
        print(f"gnnprune prune: {where}; resume with: {resume_command}", file=sys.stderr)
        return stop.exit_code if stop.signum else 130
    except NonFiniteError as exc:
        kept = (f"the last good checkpoint {exc.checkpoint} is kept" if exc.checkpoint
                else "no checkpoint was written yet")
        print(f"gnnprune prune: error: seed {exc.seed}: {exc}; stopped, {kept} (try a lower --lr)", file=sys.stderr)
        return EXIT_FAILURE
    except (MaskMismatchError, RankFailure) as exc:
        print(f"gnnprune prune: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not writer:
        return 0
    if len(config.seeds) > 1:
        s = record["summary"]
        ms = lambda k, f="{:.4f}": f"{f.format(s[k]['mean'])}±{f.format(s[k]['std'])}"  # noqa: E731
        print(_row(("mean±std", config.method.value, ms("test"), ms("val"), "", ms("weight_sparsity"), ms("edge_sparsity"),
                    ms("feature_sparsity"), ms("macs_ratio"), ms("train_time_s", "{:.2f}"), "")))
    print(f"wrote {args.out}/metrics.json")
    return 0


def _join_world(args: argparse.Namespace):
    """This process's :class:`~gnnprune.distributed.World` when ``torchrun`` started it, else ``None``."""
    import atexit

    from .distributed import init_from_env, launched_by_torchrun, shutdown

    if not launched_by_torchrun():
        return None
    if args.method == "ugs":
        raise UsageError("--method ugs cannot run under torchrun (its rounds are separate trainings); "
                         "run it in one process")
    atexit.register(shutdown)
    return init_from_env(timeout_s=args.dist_timeout)


def _load_data(args: argparse.Namespace):
    """Load ``--dataset``; a missing, unreadable or corrupt data file is a usage error."""
    from .data import DataNotFoundError, load_dataset

    chatter = io.StringIO()  # loaders' log lines: replayed on success, dropped for the one error line
    try:
        with contextlib.redirect_stderr(chatter):
            data = load_dataset(args.dataset, args.data_root, download=args.download)
        sys.stderr.write(chatter.getvalue())
        return data
    except DataNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # loaders (PyG's pickles included) raise many types for broken files
        where = f" under {args.data_root}" if args.data_root else ""
        raise UsageError(f"cannot load dataset {args.dataset!r}{where}: {_first_line(exc)}") from None


def _check_model(config, data) -> None:
    """Build the model once, so bad --option values or sizes fail before anything is written."""
    from .nn import build_model

    from .copruning import WeightGranularity

    m = config.model
    try:
        model = build_model(m.name, data.num_features, data.num_classes, m.hidden_channels, m.num_layers,
                            m.dropout, **m.options)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot build model {m.name!r} with these settings: {_first_line(exc)}") from None
    if (WeightGranularity(config.weight_granularity) is WeightGranularity.UNIT and config.targets.weights > 0
            and not model.hidden_units()):
        raise UsageError(f"model {m.name!r} has no hidden units: --weight-structure unit cannot prune its weights "
                         "(use element)")
    if config.method == "jackpot" and config.targets.edges > 0 and not model.uses_edge_weight:
        raise UsageError(f"model {m.name!r} uses no edge weights: jackpot cannot search its edges "
                         "(set --edge-sparsity 0)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _row(cells) -> str:
    return "  ".join(f"{str(c):>{w}}" for c, w in zip(cells, (8, 6, 15, 15, 7, 15, 15, 15, 15, 12, 8)))


# export, predict: a run folder as a compact model, and that model's predictions -----------------
def _add_export_commands(sub) -> None:
    p = sub.add_parser("export", help="write one seed of a run folder as a compact inference model",
                       description=(
                           "Load seed K of RUN_DIR (the weights behind its reported accuracy, its masks and learned "
                           "gates), remove what cannot change its output (pruned feature columns, hidden units that "
                           "are always zero or never read) and write OUT/architecture.json (model, widths, kept "
                           "sizes, MACs, source run), OUT/model.pt (state_dict) and OUT/graph.pt (edge_index, "
                           "edge_weight, num_nodes). The exported model's logits are checked against the masked "
                           "model's on the run's data set before anything is written. Load it with "
                           "gnnprune.export.load_exported(OUT), call it as model(x, edge_index, edge_weight)."))
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder written by 'gnnprune prune'")
    p.add_argument("--seed", type=_non_negative_int, help="which seed (default: the run's first finished one)")
    p.add_argument("--out", required=True, type=Path, help="export folder (must not exist or be empty)")
    _add_data_root(p)
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(handler=_export)
    p = sub.add_parser("predict", help="predict every node's class with an exported model",
                       description=(
                           "Run the model in EXPORT_DIR on DATASET's features and write FILE, a CSV with one row "
                           "per node: node, predicted class, one probability per class. Prints the score on the "
                           "data set's test split."))
    p.add_argument("export_dir", type=Path, metavar="EXPORT_DIR", help="a folder written by 'gnnprune export'")
    p.add_argument("--dataset", required=True, help="the data set whose nodes to predict (same feature columns)")
    p.add_argument("--out", required=True, type=Path, help="CSV file to write (must not exist)")
    p.add_argument("--graph", choices=("pruned", "dataset"), default="pruned",
                   help="propagate over the export's pruned graph with its learned edge weights (default), or "
                        "over the data set's own graph with unit weights")
    _add_data_root(p)
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(handler=_predict, download=False)


def _export(args: argparse.Namespace) -> int:
    import torch

    from .export import ExportError, export_run
    from .io import OutputExistsError, check_new_folder
    from .runs import RunFileError, run_config

    try:
        check_new_folder(args.out)
        args.dataset, args.download = run_config(args.run_dir).dataset, False
    except (RunFileError, OutputExistsError) as exc:
        raise UsageError(str(exc)) from None
    data = _load_data(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        architecture = export_run(args.run_dir, args.out, args.seed, data=data)
    except (RunFileError, ExportError) as exc:
        raise UsageError(str(exc)) from None
    macs, source = architecture["macs"], architecture["source"]
    units = ", ".join(f"{name} {u['kept']}/{u['total']}" for name, u in architecture["units"].items())
    print(f"{architecture['model']} seed {source['seed']} ({source['method']}, recorded test {source['test']:.4f}): "
          f"kept {units}; MACs {macs['exported']}/{macs['dense']} ({macs['ratio']:.4f} of dense); max |exported - "
          f"masked| {architecture['check']['max_abs_diff_vs_masked_model']:.2e}")
    print(f"wrote {args.out}/architecture.json")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from .export import ExportError, predict, read_architecture, write_predictions

    try:
        if args.out.exists():
            raise ExportError(f"output file {args.out} already exists; choose another --out")
        read_architecture(args.export_dir)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    data = _load_data(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        prediction = predict(args.export_dir, data, use_dataset_graph=args.graph == "dataset")
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    write_predictions(prediction, args.out)
    if prediction.test_score is not None:
        print(f"test {prediction.metric} {prediction.test_score:.4f} ({int(data.test_mask.sum())} nodes)")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command == "prune":
            return _prune(args)
        if args.command == "cnn":
            return args.cnn_handler(args)
        if args.command in ("export", "predict"):
            return args.handler(args)
    except UsageError as exc:
        print(f"gnnprune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gnnprune: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


def entry() -> int:
    """The ``gnnprune`` command: set up ``malloc`` ($GNNPRUNE_MALLOC, see
    :class:`gnnprune.machine.MallocMode`; may re-execute the process once), then :func:`main`."""
    from .machine import apply_malloc_mode

    try:
        apply_malloc_mode()
    except ValueError as exc:
        print(f"gnnprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return main()


if __name__ == "__main__":
    sys.exit(entry())

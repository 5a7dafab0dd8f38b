"""Data-parallel co-pruning on ``torch.distributed`` (launched with ``torchrun``).

Every process (rank) holds the whole graph and a replica of the model, its masks and its
learned gates. Gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`
over a module holding the model *and* the gates (:class:`Replica`); the backend follows the
device (:meth:`Backend.for_device`: gloo on CPU, NCCL on CUDA).

What pruning adds to ordinary data parallelism is that every rank must hold the same masks
after every update. Mask updates are pure functions of the parameters (identical on every rank
after each averaged step) and of the probe gradients, which are averaged across ranks before
any score is computed (:class:`SynchronisedPruner`); after each update the ranks compare a
digest of every mask site (:func:`check_masks_in_sync`) and stop with
:class:`MaskMismatchError` if any differ.

Each rank's loss is scaled so that the *mean* over ranks is the single-process objective:

.. math::
    L_r = W \\, \\frac{n_r}{n} \\, \\overline{\\ell}_r
        \\quad\\Rightarrow\\quad \\frac{1}{W} \\sum_r L_r = \\frac{1}{n} \\sum_i \\ell_i

for ``W`` ranks, where rank ``r`` holds ``n_r`` of the ``n`` loss nodes (full batch: every
``W``-th training node, :func:`rank_share`) and :math:`\\overline{\\ell}_r` is its mean loss. A
full-batch run on ``W`` ranks therefore computes the same gradients, masks and accuracy as one
process, up to the order of floating-point sums. Mini-batch runs give each rank its share of
every step (:class:`~gnnprune.loader.RankShare`): whole ``random-nodes`` parts (a step of ``W``
ranks takes ``W`` parts), or the ``W``-th part of a ``neighbors`` batch's seed nodes, its loss
weighted by its share of the seeds (:attr:`~gnnprune.loader.NodeBatch.weight`).
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .copruning import CoPruner, WeightGranularity
from .data import GraphData
from .graph import EdgeSet
from .loader import MiniBatchConfig, RankShare
from .masks import MaskEngine, WeightDistribution
from .methods.base import Fitted
from .minibatch import MiniBatchCoPruner, MiniBatchRun, step_batches
from .nn import GraphModel
from .training import Method, TrainConfig, TrainingRun, TrainResult, train

#: seconds a collective (and the rendezvous) may wait for the other ranks before failing
DEFAULT_TIMEOUT_S = 600.0
#: environment variables ``torchrun`` sets in every worker
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class Backend(str, enum.Enum):
    """The ``torch.distributed`` backend of a device type."""

    GLOO = "gloo"  # CPU tensors
    NCCL = "nccl"  # CUDA tensors

    @classmethod
    def for_device(cls, device: torch.device | str) -> "Backend":
        return cls.NCCL if torch.device(device).type == "cuda" else cls.GLOO


class RankFailure(RuntimeError):
    """A collective failed or timed out: another rank has exited or stopped answering."""


class MaskMismatchError(RuntimeError):
    """The ranks' masks differ after an update (their scores were not identical)."""


@dataclass(frozen=True)
class World:
    """This process's place in the process group, and the collectives the pruner needs.

    Attributes:
        rank: this process, ``0 .. world_size - 1`` (rank 0 writes the run folder).
        world_size: number of processes.
        local_rank: this process on its machine (picks its GPU under NCCL).
        device: where collectives run: CPU (gloo) or this rank's GPU (NCCL). Tensors are
            moved there for the collective and back.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def backend(self) -> Backend:
        return Backend.for_device(self.device)

    @property
    def is_writer(self) -> bool:
        """Whether this rank writes files and prints results (rank 0)."""
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend.value}

    # collectives ---------------------------------------------------------------------------
    def all_reduce_mean_(self, tensors: list[Tensor]) -> None:
        """Replace every tensor by its mean over the ranks, in place (one flat all-reduce)."""
        if self.world_size == 1 or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64) for t in tensors])
        self._collective("all-reduce", dist.all_reduce, flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.detach().copy_(flat[offset:offset + t.numel()].view_as(t).to(t.device, t.dtype))
            offset += t.numel()

    def mean(self, value: float) -> float:
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        self.all_reduce_mean_([tensor])
        return float(tensor)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        if self.world_size == 1:
            return bool(flag)
        tensor = torch.tensor([int(bool(flag))], device=self.device)
        self._collective("all-reduce", dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def gather_rows(self, row: Tensor) -> Tensor:
        """``[world_size, k]``: every rank's ``row`` (``[k]`` int64), in rank order."""
        if self.world_size == 1:
            return row.view(1, -1)
        out = [torch.empty_like(row, device=self.device) for _ in range(self.world_size)]
        self._collective("all-gather", dist.all_gather, out, row.to(self.device))
        return torch.stack(out).cpu()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (pickled in memory; nothing is read from a file)."""
        if self.world_size == 1:
            return obj
        holder = [obj]
        self._collective("broadcast", dist.broadcast_object_list, holder, src=0,
                         device=self.device if self.backend is Backend.NCCL else None)
        return holder[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            self._collective("barrier", dist.barrier)

    def _collective(self, what: str, collective: Callable, *args, **kwargs):
        try:
            return collective(*args, **kwargs)
        except (RuntimeError, dist.DistError) as exc:
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise RankFailure(f"rank {self.rank}: {what} across {self.world_size} ranks failed ({text}); another "
                              "rank has exited or stopped answering (its own error names it)") from None


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a worker of ``torchrun`` (or of any launcher setting its variables)."""
    return all(name in environ for name in TORCHRUN_VARIABLES)


def init_from_env(device: torch.device | str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                  environ: Mapping[str, str] = os.environ) -> World:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...).

    Args:
        device: where this rank computes; ``cuda`` picks GPU ``LOCAL_RANK`` and NCCL, anything
            else gloo. Default: CPU.
        timeout_s: how long the rendezvous and every collective wait for the other ranks
            before failing (a rank that died ends the others' wait, it does not hang them).
    """
    try:
        rank, world_size, local_rank = (int(environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a torchrun worker: environment variable {exc} is missing or not an integer") from None
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    world = World(rank, world_size, local_rank, device)
    if not dist.is_initialized():
        dist.init_process_group(world.backend.value, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return world


def shutdown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


# the replicated graph ------------------------------------------------------------------------
#: where :func:`shared_graph` puts the graph of one machine (a RAM file system on Linux)
SHARED_FOLDER = Path("/dev/shm")


def shared_graph(load: Callable[[], GraphData], world: World, folder: Path = SHARED_FOLDER) -> GraphData:
    """The graph of :func:`load`, loaded once per machine and mapped into every local rank.

    Local rank 0 calls ``load`` and writes the graph's tensors to a file in ``folder`` (RAM);
    every local rank maps that file (``torch.load(mmap=True, weights_only=True)``) and it is
    removed once all have mapped it. The ranks of a machine then read the same physical pages for
    the features, edges, labels and splits; what a rank derives from them (kept edges, kept feature
    columns, sparse operators, batches) is its own. If ``folder`` is missing or the file cannot be
    written, every rank loads its own copy.
    """
    if world.world_size == 1 or not folder.is_dir():
        return load()
    job = os.environ.get("TORCHELASTIC_RUN_ID", "job")
    path = folder / f"gnnprune-graph-{job}-{os.environ.get('MASTER_PORT', '0')}-{os.getuid()}.pt"
    data = None
    if world.local_rank == 0:
        data = load()
        temp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save(_graph_state(data), temp)
            os.replace(temp, path)
        except (OSError, RuntimeError):  # no room in RAM: every rank keeps its own copy
            temp.unlink(missing_ok=True)
    world.barrier()
    if path.exists():
        data = _graph_from_state(torch.load(path, mmap=True, weights_only=True))
    world.barrier()
    if world.local_rank == 0:
        path.unlink(missing_ok=True)
    return load() if data is None else data


def _graph_state(data: GraphData) -> dict:
    return {"name": data.name, "x": data.x, "edges": data.edges.edges, "y": data.y, "train_mask": data.train_mask,
            "val_mask": data.val_mask, "test_mask": data.test_mask, "num_classes": data.num_classes,
            "metric": data.metric, "info": data.info, "task": data.task}


def _graph_from_state(state: dict) -> GraphData:
    edges = EdgeSet(state.pop("edges"), int(state["x"].size(0)))
    return GraphData(edges=edges, **state)


# masks in step ------------------------------------------------------------------------------
def mask_digests(engine: MaskEngine) -> Tensor:
    """``[sites]`` int64: the first 8 bytes of the SHA-256 of each site's mask, in site order."""
    digests = [int.from_bytes(hashlib.sha256(site.mask.contiguous().numpy().tobytes()).digest()[:8], "little",
                              signed=True) for site in engine]
    return torch.tensor(digests, dtype=torch.int64)


def check_masks_in_sync(engine: MaskEngine, world: World, when: str = "after a mask update") -> None:
    """Compare every site's mask digest across the ranks; raise :class:`MaskMismatchError` naming
    the ranks and sites that differ from rank 0's."""
    table = world.gather_rows(mask_digests(engine))
    names = [site.name for site in engine]
    differing = {rank: [names[i] for i in (table[rank] != table[0]).nonzero().view(-1).tolist()]
                 for rank in range(1, table.size(0))}
    differing = {rank: sites for rank, sites in differing.items() if sites}
    if differing:
        detail = "; ".join(f"rank {rank} in {', '.join(sites)}" for rank, sites in differing.items())
        raise MaskMismatchError(f"masks differ across ranks {when}: {detail} (against rank 0); the ranks scored "
                                "differently, so the run stops before the replicas diverge")


class SynchronisedPruner:
    """Mixin for a :class:`CoPruner`: probe gradients averaged over the ranks, masks checked after updates.

    The probe loss of each rank must be scaled so that its mean over the ranks is the global
    probe loss (see the module docstring); the gradients of every masked parameter and of the
    edge values are then averaged *before* :meth:`CoPruner.probe` computes any score from them
    (feature scores are norms of averaged gradients, not averages of norms).
    """

    world: World

    def _probe_backward(self, loss_fn, gate: Tensor, edge_value: Tensor) -> float:
        loss = super()._probe_backward(loss_fn, gate, edge_value)
        return self._average_probe(loss, edge_value)

    def _average_probe(self, loss: float, edge_value: Tensor) -> float:
        for param in self.masked_params.values():
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        if edge_value.grad is None:
            edge_value.grad = torch.zeros_like(edge_value)
        loss_tensor = torch.tensor([loss], dtype=torch.float64)
        self.world.all_reduce_mean_([edge_value.grad, *(p.grad for p in self.masked_params.values()), loss_tensor])
        return float(loss_tensor)

    def update(self, *args, **kwargs) -> dict[str, dict[str, int]]:
        report = super().update(*args, **kwargs)
        check_masks_in_sync(self.engine, self.world)
        return report


class DistributedCoPruner(SynchronisedPruner, CoPruner):
    """A :class:`CoPruner` of one rank (full batch). ``world``: this rank's :class:`World`."""

    def __init__(self, model: GraphModel, data: GraphData, world: World, **kwargs) -> None:
        super().__init__(model, data, **kwargs)
        self.world = world


class DistributedMiniBatchCoPruner(SynchronisedPruner, MiniBatchCoPruner):
    """A :class:`MiniBatchCoPruner` of one rank: its share of every step's batch
    (:class:`~gnnprune.loader.RankShare`), drawn from the generator every rank advances alike."""

    def __init__(self, model: GraphModel, data: GraphData, world: World, batching: MiniBatchConfig = MiniBatchConfig(),
                 seed: int = 0, **kwargs) -> None:
        super().__init__(model, data, batching, seed, share=RankShare(world.rank, world.world_size), **kwargs)
        self.world = world


# the data-parallel model ----------------------------------------------------------------------
class Replica(nn.Module):
    """The model and the pruner's learned gates as one module, so that DDP averages the gates'
    gradients with the model's. The forward is the model's; the gates enter through its inputs."""

    def __init__(self, model: GraphModel, pruner: CoPruner) -> None:
        super().__init__()
        self.model = model
        self.gates = nn.ParameterList(pruner.gate_parameters())

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def data_parallel(model: GraphModel, pruner: CoPruner, world: World) -> nn.Module:
    """:class:`Replica` under ``DistributedDataParallel`` (rank 0's parameters broadcast at wrap)."""
    replica = Replica(model, pruner)
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(replica, device_ids=device_ids)


def rank_share(mask: Tensor, world: World) -> Tensor:
    """``[N]`` bool: this rank's share of the nodes in ``mask``: the ``rank``-th, ``rank + W``-th, ...
    of them in node order. The shares of all ranks partition ``mask``."""
    index = mask.nonzero().view(-1)[world.rank::world.world_size]
    share = torch.zeros_like(mask)
    share[index] = True
    return share


def _share_loss(loss_fn, logits: Tensor, target: Tensor, mask: Tensor, world: World) -> Tensor:
    """This rank's term of ``loss_fn`` over ``mask``, scaled so that its mean over the ranks is the
    loss over all of ``mask``: :math:`W \\, (n_r / n)` times the mean over the share."""
    share = rank_share(mask, world)
    count, total = int(share.sum()), int(mask.sum())
    if count == 0:
        return logits.sum() * 0.0
    return loss_fn(logits[share], target[share]) * (world.world_size * count / total)


@dataclass
class DistributedRun(TrainingRun):
    """:class:`TrainingRun` of one rank (full batch): the loss over this rank's share of the
    labelled and pseudo-labelled nodes, scaled (:func:`_share_loss`); steps through DDP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.world: World = self.pruner.world
        self.replica = data_parallel(self.model, self.pruner, self.world)

    def train_loss(self, logits: Tensor) -> Tensor:
        """:meth:`TrainingRun.train_loss` over this rank's share of its nodes (mean over ranks: the whole)."""
        loss = _share_loss(self.data.loss, logits, self.data.y, self.data.train_mask, self.world)
        weight = self.config.pseudo_label_weight
        if self.config.pseudo_label_warmup > 0:
            weight *= min(1.0, self.epoch / self.config.pseudo_label_warmup)
        if weight > 0 and self.pseudo_mask is not None and bool(self.pseudo_mask.any()):
            loss = loss + weight * _share_loss(nn.functional.cross_entropy, logits, self.pseudo_labels,
                                               self.pseudo_mask, self.world)
        return loss


def distributed_full_batch_step(run: DistributedRun, method: Method) -> dict:
    """One full-batch step through DDP; the recorded loss is the mean over ranks (the global loss)."""
    run.optimizer.zero_grad(set_to_none=True)
    loss = run.step(run.train_loss(run.replica(run.pruner.inputs(), run.pruner.graph())))
    return {"loss": run.world.mean(loss)}


@dataclass
class DistributedMiniBatchRun(MiniBatchRun):
    """:class:`MiniBatchRun` of one rank: its batches step through DDP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.world: World = self.pruner.world
        self.replica = data_parallel(self.model, self.pruner, self.world)


def distributed_minibatch_step(run: DistributedMiniBatchRun, method: Method) -> dict:
    """One epoch: every rank steps on its share of each step's batch (:class:`~gnnprune.loader.RankShare`)
    at the same time, DDP averaging the ranks' gradients (a filler batch counts zero).

    Returns the mean loss over all ranks' batches and the number of steps.
    """
    losses, steps = step_batches(run, run.replica)
    summed = torch.tensor([sum(losses), float(len(losses))], dtype=torch.float64)
    run.world.all_reduce_mean_([summed])
    return {"loss": float(summed[0] / summed[1]), "batches": steps}


def train_once_distributed(method: Method, model: GraphModel, data: GraphData, config: TrainConfig, world: World, *,
                           batching: MiniBatchConfig | None = None, learn_gates: bool = False,
                           granularity: WeightGranularity = WeightGranularity.ELEMENT,
                           distribution: WeightDistribution = WeightDistribution.UNIFORM, epochs: int | None = None,
                           progress: bool = True, **loop) -> Fitted:
    """:func:`gnnprune.methods.train_once` on this rank (full batch, or ``batching``'s mini-batches).

    Every rank calls it with the same arguments, after seeding its generators alike. Only rank 0
    shows progress and hands checkpoints to ``loop["on_checkpoint"]``; a stop request on any
    rank stops all of them after the same epoch.
    """
    options = {"learn_edge_weights": learn_gates, "learn_feature_gates": learn_gates,
               "weight_granularity": granularity, "weight_distribution": distribution}
    if batching is None:
        pruner = DistributedCoPruner(model, data, world, **options)
        shape = {"run_class": DistributedRun, "epoch_step": distributed_full_batch_step}
    else:
        pruner = DistributedMiniBatchCoPruner(model, data, world, batching, seed=config.seed, **options)
        shape = {"run_class": DistributedMiniBatchRun, "epoch_step": distributed_minibatch_step}
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    should_stop = loop.pop("should_stop", None)
    if not world.is_writer:
        loop["on_checkpoint"] = None
    agreed_stop = lambda: world.any(should_stop is not None and should_stop())  # noqa: E731
    result: TrainResult = train(model, data, pruner, method, config, progress and world.is_writer,
                                should_stop=agreed_stop, **shape, **loop)
    return Fitted(result, pruner)

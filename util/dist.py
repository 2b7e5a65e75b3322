"""Distributed training state: one process per device, started by torchrun (or by hand from the original keys).

torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) comes first,
as in nanoGPT's ``train.py``. Without it, the original configs' ``world_size`` > 1 joins the process group at
``dist_url`` as process ``rank`` (one process per launch); otherwise the run is a single process and every helper
here is a no-op. The state lives in ``torch.distributed`` only: the helpers ask it, so nothing here needs resetting.

Semantics (see docs/distributed.md): N processes with a global batch B compute
the update of one process with batch B. BN statistics are those of the global batch (:func:`convert_sync_batchnorm`)
and a loss is the mean over the valid pixels of the global batch (:func:`global_mean`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from util.errors import UserError

log = logging.getLogger(__name__)

TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True when torchrun (torch.distributed.run) started this process."""
    return all(key in os.environ for key in TORCHRUN_KEYS)


def setup(
    device: torch.device,
    dist_url: str = "tcp://127.0.0.1:6789",
    world_size: int = 1,
    rank: int = 0,
    backend: str = "nccl",
    multiprocessing_distributed: bool = False,
) -> torch.device:
    """Join the process group when this run has several processes; returns this process's device.

    Args:
        device: the device chosen from the config (its type decides the backend and the GPU per process).
        dist_url, world_size, rank: the original keys, used only without torchrun's environment; there
            ``world_size`` counts processes (one per launch), as in the original without multiprocessing.
        backend: ``nccl`` or ``gloo`` on CUDA; the CPU always uses gloo.
        multiprocessing_distributed: the original's in-process launcher, replaced by torchrun (a notice).
    """
    if dist.is_initialized():
        return device
    if under_torchrun():
        init_method, world_size, rank = "env://", int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    else:
        if multiprocessing_distributed:
            log.info(
                "multiprocessing_distributed: this launch starts no further processes; start one per GPU "
                "with torchrun (tool_train/train.sh does, see docs/distributed.md)"
            )
        if world_size <= 1:
            return device
        if not 0 <= rank < world_size:
            raise UserError(f"config keys rank/world_size: need 0 <= rank < world_size, got {rank}, {world_size}")
        init_method = dist_url
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        if backend not in ("nccl", "gloo"):
            raise UserError(f"config key 'dist_backend' must be nccl or gloo on CUDA, got {backend!r}")
    else:
        backend = "gloo"
    store = None
    if under_torchrun() and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's store outlives a restart (--max-restarts): keys under a per-attempt prefix, or the new
        # processes may read the dead ones' addresses (seen with gloo in torch 2.13)
        agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False)
        store = dist.PrefixStore(f"attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", agent)
        init_method = None
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        store=store,
        world_size=world_size,
        rank=rank,
        device_id=device if device.type == "cuda" else None,
    )
    return device


def cleanup() -> None:
    """Leave the process group (at the end of a run; a no-op for a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK), which picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 writes logs, TensorBoard events, the config and checkpoints."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collectives take their tensors: nccl reduces CUDA tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a new tensor on ``tensor``'s device; the tensor itself with one process)."""
    if world_size() == 1:
        return tensor
    out = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes (of per-process values that are already global means, e.g. :func:`global_mean`)."""
    return all_reduce_sum(tensor) / world_size() if world_size() > 1 else tensor


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (e.g. a random seed all processes must share)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def gather_objects(obj: Any) -> list:
    """Every process's ``obj``, in rank order (e.g. per-process RNG states for a checkpoint)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """This process's share of a mean over the global batch: ``total * world_size / sum of count``.

    DDP averages gradients over processes, so the processes together optimise ``sum(total) / sum(count)``,
    the mean one process with the whole batch computes, also when processes hold different numbers of
    valid (non-ignored) pixels. The mean of these values over processes is that global mean.
    """
    return total * world_size() / all_reduce_sum(count.to(total.dtype)).clamp_min(1)


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) with autograd: each process's input feeds every process's loss, so its gradient is
    the sum over processes of the output's gradients, itself an all-reduce."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the global batch on the CPU, where ``nn.SyncBatchNorm`` refuses to run (torch 2.13 has
    no CPU kernels for its statistics).

    The per-channel sums are all-reduced with autograd (:class:`_SumOverProcesses`), so the normalisation, the
    running statistics and the gradients are those of one process with the whole batch. Eval mode and a single
    process use plain BN.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / self.num_batches_tracked.item()
        dtype = x.dtype
        x = x.float() if dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 under autocast
        channels = x.size(1)
        count = torch.tensor([x.numel() // channels], dtype=x.dtype, device=x.device)
        sums = _SumOverProcesses.apply(torch.cat([x.sum((0, 2, 3)), count]))
        n = sums[channels].detach()
        mean = sums[:channels] / n
        centered = x - mean.view(1, -1, 1, 1)
        var = _SumOverProcesses.apply(centered.square().sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        out = centered * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BN over the global batch: ``nn.SyncBatchNorm`` on CUDA, :class:`GlooSyncBatchNorm` on the CPU.

    Convert before building the optimizer (the CPU conversion makes new parameters, with the same values).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            like = next((t for t in (*child.parameters(), *child.buffers()) if t.is_floating_point()), None)
            factory = {} if like is None else {"device": like.device, "dtype": like.dtype}
            sync = GlooSyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats, **factory
            )
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DataParallel / DistributedDataParallel wrapper."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes, else ``model``."""
    if world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

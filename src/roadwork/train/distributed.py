"""Process setup for single-process and torchrun/DDP training (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_command(module: str, processes: int) -> list[str] | None:
    """The command that re-launches `module` under torchrun, or None to run in this process."""
    if processes <= 1 or under_torchrun():
        return None
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        module,
    ]


def relaunch_under_torchrun(module: str, processes: int) -> None:
    """Replace this process by torchrun with `processes` workers when more than one is asked for."""
    command = launch_command(module, processes)
    if command is not None:
        log.info("launching: %s", " ".join(command[1:]))
        os.execv(command[0], command)


def init_distributed() -> Dist:
    cuda = torch.cuda.is_available()
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(0, 1, torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    world = dist.get_world_size()
    if not cuda:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(dist.get_rank(), world, torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(*parts: int) -> None:
    """Seed python, numpy and torch (every device) from a tuple (e.g. seed, epoch, rank)."""
    torch.manual_seed(seed_host_rngs(*parts))


def seed_host_rngs(*parts: int) -> int:
    """Seed python, numpy and torch's CPU generator, which is all that CPU-side augmentation
    draws from: the same CPU streams as `seed_everything`. Made for per-item seeding in data
    loaders, where `torch.manual_seed` is too slow: it also queues a seed for every accelerator
    backend, recording a stack trace each time (about 0.8 ms per call with torch 2.14, more than
    the augmentation of a 64 px image). Returns the derived seed."""
    seed = int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    return seed


def rng_state() -> dict:
    """All RNG states as tensors/plain types, loadable with torch.load(weights_only=True)."""
    np_state = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "python": list(python_state),
        "python_gauss": gauss_next,
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_gather_cat(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Concatenate equal-length tensors from every rank (rank order)."""
    if world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor)
    return torch.cat(parts)

"""Resumable training data order: a deterministic, rank-sharded sampler and a loader Lightning can checkpoint.

Lightning restarts a partially finished epoch from the first batch unless the train loader is *stateful*
(has ``state_dict``/``load_state_dict``; Lightning 2.x saves those under ``loops.fit_loop.state_dict.combined_loader``
and restores them before creating the iterator). ``ResumableLoader`` is such a loader:

* the sample order of epoch e is a permutation drawn from (seed, e) only, padded (by wrap-around) to a multiple of
  the world size and strided over ranks, like ``DistributedSampler``;
* every item is produced with its own augmentation seed derived from (seed, epoch, position in the epoch) through
  the dataset's ``reseed(seed)`` method, so an item is identical whichever worker or rank loads it;
* the state is (epoch, batches consumed by the training loop); a restored loader skips the consumed batches of that
  epoch, so a run killed mid-epoch continues with exactly the batches an uninterrupted run would have seen.

References:
    Lightning 2.6 ``lightning/pytorch/loops/fit_loop.py`` (``on_save_checkpoint`` stores ``combined_loader`` states;
    ``setup_data`` calls ``_load_combined_loader_states`` before ``iter``), ``training_epoch_loop.py`` (warning for
    non-resumable loaders on mid-epoch restarts).
    torchdata ``StatefulDataLoader`` (the same state_dict/load_state_dict protocol).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

logger = logging.getLogger(__name__)

__all__ = ["ResumableDataModule", "ResumableLoader", "ResumableSampler", "derive_seed"]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset index, item seed)`` for this rank's share of one epoch, optionally from an offset.

    Args:
        num_samples: dataset length.
        seed: base seed of the order and of the item seeds.
        shuffle: permute each epoch (True) or keep dataset order.
        num_replicas: world size.
        rank: this process's global rank.
    """

    def __init__(self, num_samples: int, *, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if num_samples < 1:
            raise ValueError(f"ResumableSampler needs a non-empty dataset; got {num_samples} samples.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}); got {rank}.")
        self.num_samples = num_samples
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0  # global positions of this epoch to skip (a multiple of the world size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def epoch_order(self, epoch: int) -> list[int]:
        """Global order of an epoch, padded by wrap-around to a multiple of the world size."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            order = torch.randperm(self.num_samples, generator=gen).tolist()
        else:
            order = list(range(self.num_samples))
        pad = (-len(order)) % self.num_replicas
        return order + (order * (pad // len(order) + 1))[:pad]

    def __len__(self) -> int:
        padded = self.num_samples + (-self.num_samples) % self.num_replicas
        return padded // self.num_replicas

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order(self.epoch)
        for position in range(self.start + self.rank, len(order), self.num_replicas):
            yield order[position], derive_seed(self.seed, "item", self.epoch, position)


class _SeededItems(Dataset):
    """Reads ``dataset[index]`` after ``dataset.reseed(item_seed)`` (when the dataset has a ``reseed`` method)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.reseed: Callable[[int], None] | None = getattr(dataset, "reseed", None)
        if self.reseed is None:
            logger.warning(
                "%s has no reseed(seed) method: its random augmentations are not tied to the data order, so a "
                "resumed run may see different augmentations than an uninterrupted one.",
                type(dataset).__name__,
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, item_seed = key
        if self.reseed is not None:
            self.reseed(item_seed % 2**32)
        return self.dataset[index]


class ResumableLoader:
    """Batches of a map-style dataset in ``ResumableSampler`` order, with Lightning's stateful-loader protocol.

    Args:
        dataset: map-style dataset.
        batch_size: items per batch on this rank.
        seed: order and augmentation seed.
        shuffle: shuffle each epoch.
        num_replicas: world size.
        rank: global rank.
        drop_last: drop a final incomplete batch.
        **loader_kwargs: passed to ``torch.utils.data.DataLoader`` (num_workers, collate_fn, pin_memory,
            persistent_workers, worker_init_fn, ...); ``sampler``/``shuffle``/``batch_sampler`` are not allowed.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        **loader_kwargs: Any,
    ):
        clash = sorted(set(loader_kwargs) & {"sampler", "batch_sampler", "shuffle", "generator"})
        if clash:
            raise ValueError(f"ResumableLoader sets {clash} itself; remove them.")
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = ResumableSampler(len(dataset), seed=seed, shuffle=shuffle, num_replicas=num_replicas, rank=rank)
        self.loader = DataLoader(
            _SeededItems(dataset), batch_size=batch_size, sampler=self.sampler, drop_last=drop_last, **loader_kwargs
        )
        self._consumed = 0  # batches of `self.sampler.epoch` handed to the training loop
        self._resume: dict[str, int] | None = None

    @classmethod
    def from_dataloader(cls, loader: DataLoader, *, seed: int, num_replicas: int = 1, rank: int = 0) -> ResumableLoader:
        """Same dataset, batch size, workers and collate function as ``loader``; shuffled iff it was."""
        if not isinstance(loader, DataLoader):
            raise ValueError(
                f"The data module's train_dataloader() must return a torch DataLoader; got {type(loader).__name__}."
            )
        if loader.batch_size is None:
            raise ValueError("ResumableLoader.from_dataloader needs a DataLoader with a batch_size.")
        return cls(
            loader.dataset,
            batch_size=loader.batch_size,
            seed=seed,
            shuffle=isinstance(loader.sampler, RandomSampler),
            num_replicas=num_replicas,
            rank=rank,
            drop_last=loader.drop_last,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            worker_init_fn=loader.worker_init_fn,
            persistent_workers=loader.persistent_workers,
        )

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset.dataset

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing runs until the first batch is requested, i.e. after Lightning's set_epoch().
        skip = 0
        if self._resume is not None:
            if self._resume["epoch"] == self.sampler.epoch:
                skip = self._resume["batches_consumed"]
            self._resume = None
        # Set on every iteration (never reset afterwards): an abandoned iterator being closed later cannot
        # change the offset of the current one.
        self.sampler.start = skip * self.batch_size * self.sampler.num_replicas
        self._consumed = skip
        for batch in self.loader:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the training loop is in the data: (epoch, batches consumed), plus what must match on resume."""
        return {
            "epoch": self.sampler.epoch,
            "batches_consumed": self._consumed,
            "seed": self.sampler.seed,
            "num_samples": self.sampler.num_samples,
            "batch_size": self.batch_size,
            "num_replicas": self.sampler.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the position; the next iteration of that epoch starts after the consumed batches."""
        mine = self.state_dict()
        changed = [k for k in ("seed", "num_samples", "batch_size", "num_replicas") if state.get(k) != mine[k]]
        if changed:
            detail = ", ".join(f"{k}: checkpoint {state.get(k)} vs now {mine[k]}" for k in changed)
            logger.warning("Data order cannot be resumed exactly (%s); the interrupted epoch restarts.", detail)
            return
        self.sampler.set_epoch(state["epoch"])
        self._resume = {"epoch": int(state["epoch"]), "batches_consumed": int(state["batches_consumed"])}


class ResumableDataModule(pl.LightningDataModule):
    """Wraps a data module so that its training loader becomes a ``ResumableLoader``.

    The inner module builds datasets and loaders as usual (its ``train_dataloader()`` defines dataset, batch size,
    workers and collate function); validation loaders pass through unchanged (Lightning shards them).

    Args:
        datamodule: e.g. ``ldm.data.humansd.HumanPoseDataModule``.
        seed: data-order seed (the training seed).
    """

    def __init__(self, datamodule: pl.LightningDataModule, *, seed: int):
        super().__init__()
        self.datamodule = datamodule
        self.seed = int(seed)

    @property
    def batch_size(self) -> int:
        """Per-device batch size (read by the LR scaling)."""
        return int(self.datamodule.batch_size)

    @property
    def has_validation(self) -> bool:
        """The inner module's ``has_validation`` (True when it does not say)."""
        return bool(getattr(self.datamodule, "has_validation", True))

    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        self.datamodule.setup(stage)

    def train_dataloader(self) -> ResumableLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return ResumableLoader.from_dataloader(
            self.datamodule.train_dataloader(), seed=self.seed, num_replicas=world, rank=rank
        )

    def val_dataloader(self) -> Any:
        return self.datamodule.val_dataloader()

    def teardown(self, stage: str) -> None:
        self.datamodule.teardown(stage)

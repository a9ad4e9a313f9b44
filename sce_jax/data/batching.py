"""Fixed-shape batches of a dataset, decoded lazily in a thread pool.

Batches (:func:`iterate_batches`) have a fixed shape: the last one is padded with
``valid=False`` rows, so a jitted search compiles once. Process ``p`` of ``P`` reads the
examples with ``example_id % P == p`` (strided shards: every process gets a similar mix of
the dataset's order). The number of batches of a shard depends only on the dataset, the
batch size and the ids to skip (an example that fails to decode stays in its batch as an
invalid row), so every process can compute the batch count of every other process
(:func:`num_batches`), e.g. to run the same number of collective steps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import AbstractSet, Iterator

import numpy as np

from sce_jax.data.dataset import NO_LABEL, Batch, Dataset, SkipRecord


def num_batches(dataset: Dataset, batch_size: int, *, process_index: int = 0,
                process_count: int = 1, skip_ids: AbstractSet[int] = frozenset()) -> int:
    """How many batches :func:`iterate_batches` yields for one process's shard."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    remaining = dataset.count_remaining(skip_ids, process_index=process_index,
                                        process_count=process_count)
    return -(-remaining // batch_size)


def max_num_batches(dataset: Dataset, batch_size: int, *, process_count: int = 1,
                    skip_ids: AbstractSet[int] = frozenset()) -> int:
    """The largest :func:`num_batches` over all processes (each process can compute it)."""
    return max(num_batches(dataset, batch_size, process_index=p, process_count=process_count,
                           skip_ids=skip_ids) for p in range(process_count))


def _assemble(dataset: Dataset, ids: np.ndarray, results: list, batch_size: int) -> Batch:
    h, w = dataset.image_size
    images = np.zeros((batch_size, h, w, dataset.channels), np.float32)
    regions = np.ones((batch_size, h, w, 1), np.float32)
    example_ids = np.full(batch_size, -1, np.int32)
    valid = np.zeros(batch_size, bool)
    labels = np.full(batch_size, NO_LABEL, np.int32)
    targets = np.full(batch_size, NO_LABEL, np.int32)
    sources = [""] * batch_size
    skipped = []
    for row, (example_id, result) in enumerate(zip(ids, results)):
        example_id = int(example_id)
        example_ids[row] = example_id
        labels[row] = dataset.labels[example_id]
        targets[row] = dataset.targets[example_id]
        sources[row] = dataset.sources[example_id]
        if isinstance(result, SkipRecord):
            skipped.append(result)
        else:
            images[row] = result.image
            regions[row] = result.region
            valid[row] = True
    return Batch(images=images, example_ids=example_ids, valid=valid, labels=labels,
                 targets=targets, regions=regions, sources=sources, skipped=skipped)


def iterate_batches(dataset: Dataset, batch_size: int, *, process_index: int = 0,
                    process_count: int = 1, skip_ids: AbstractSet[int] = frozenset(),
                    pad_to_num_batches: int | None = None, num_threads: int | None = None,
                    prefetch: int = 1) -> Iterator[Batch]:
    """Fixed-shape batches of one process's shard, decoded lazily (see the module docstring).

    Args:
      dataset: from :func:`open_dataset`.
      batch_size: rows per batch; the last batch is padded with ``valid=False`` rows.
      process_index, process_count: this process reads ids with ``id % process_count ==
        process_index``.
      skip_ids: example ids to leave out (already done: a resumed run).
      pad_to_num_batches: yield all-padding batches after the data until there are this many
        (e.g. :func:`max_num_batches`, so every process runs the same number of steps).
      num_threads: decoding threads (default ``min(8, cpu count)``; 0 decodes in the calling
        thread).
      prefetch: batches decoded ahead of the one being used (0: none).

    Yields:
      :class:`Batch`; an example that fails to decode is an invalid row of its batch and a
      :class:`SkipRecord` in ``batch.skipped``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    ids = dataset.shard_ids(process_index, process_count, skip_ids)
    chunks = [ids[i:i + batch_size] for i in range(0, ids.size, batch_size)]
    if pad_to_num_batches is not None:
        if pad_to_num_batches < len(chunks):
            raise ValueError(f"pad_to_num_batches={pad_to_num_batches} is less than the "
                             f"{len(chunks)} batches of process {process_index}")
        chunks += [ids[:0]] * (pad_to_num_batches - len(chunks))
    threads = min(8, os.cpu_count() or 1) if num_threads is None else int(num_threads)
    return _decoded_batches(dataset, chunks, batch_size, threads, prefetch)


def _decoded_batches(dataset: Dataset, chunks: list[np.ndarray], batch_size: int, threads: int,
                     prefetch: int) -> Iterator[Batch]:
    """The generator behind :func:`iterate_batches` (arguments already checked)."""
    if threads <= 0:
        for chunk in chunks:
            yield _assemble(dataset, chunk, [dataset.load(int(i)) for i in chunk], batch_size)
        return
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="sce_jax-decode")
    try:
        pending = collections.deque()
        upcoming = iter(chunks)

        def submit_next() -> None:
            chunk = next(upcoming, None)
            if chunk is not None:
                pending.append((chunk, [pool.submit(dataset.load, int(i)) for i in chunk]))

        for _ in range(max(0, prefetch) + 1):
            submit_next()
        while pending:
            chunk, futures = pending.popleft()
            submit_next()
            yield _assemble(dataset, chunk, [f.result() for f in futures], batch_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

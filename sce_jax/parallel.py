"""Device meshes and batch sharding: one ``data`` axis, parameters replicated.

The search is data-parallel: every example is independent, so a batch is split over the
``data`` axis of a mesh and the parameters are replicated. The same jitted function runs on
one CPU, several GPUs, or several hosts (after ``jax.distributed.initialize``): XLA partitions
it from the input shardings, with no ``pmap``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def local_device_count(mesh: Mesh) -> int:
    """Devices of the mesh that belong to this process."""
    return len(mesh.local_devices)


def padded_size(batch_size: int, mesh: Mesh | None) -> int:
    """The smallest multiple of this process's mesh devices that holds ``batch_size`` rows.

    With several processes each one passes its own rows (its share of the global batch), so
    every process must pad to the same size: keep ``batch_size`` equal on all of them.
    """
    if mesh is None:
        return batch_size
    n = local_device_count(mesh)
    return -(-batch_size // n) * n


def pad_batch(arrays: dict[str, Any], size: int) -> dict[str, Any]:
    """Pads every array (or every leaf of a pytree entry) on axis 0 to ``size`` by repeating
    its first row (values are unused: the caller marks padding invalid)."""
    def pad(name, a):
        a = np.asarray(a)
        if a.shape[0] > size:
            raise ValueError(f"{name}: {a.shape[0]} rows do not fit a batch of {size}")
        if a.shape[0] < size:
            filler = np.repeat(a[:1], size - a.shape[0], axis=0) if a.shape[0] else np.zeros((size,) + a.shape[1:], a.dtype)
            a = np.concatenate([a, filler], axis=0)
        return a
    return {name: jax.tree.map(lambda a, name=name: pad(name, a), value)
            for name, value in arrays.items()}


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Places this process's rows of a batch, sharded over the data axis.

    With one process the rows are the whole batch. With several, each process passes its own
    rows and the result is one global array whose rows are the processes' rows in process
    order (``jax.make_array_from_process_local_data``).
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded result, as numpy (all rows with one process)."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    seen, rows = set(), []
    for shard in shards:  # replicas along other mesh axes hold the same rows once each
        start = shard.index[0].start or 0
        if start not in seen:
            seen.add(start)
            rows.append(np.asarray(shard.data))
    return np.concatenate(rows, axis=0)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places parameters on every device of the mesh.

    With several processes every process holds the same values (each loaded the same
    checkpoint) and places them on its own devices only: the global array is assembled from
    host copies, since an array on one process's device cannot be sent to another's.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_callback(
        np.shape(a), sharding, lambda index, host=np.asarray(a): host[index]), tree)

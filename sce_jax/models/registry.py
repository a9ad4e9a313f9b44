"""The model classes that checkpoints may name, by class name (explicit, fails early).

The classes are those of the registries in :mod:`sce_jax.model_kinds` (generator kinds,
classifier and prior networks, other models), so registering a kind there is enough for its
checkpoints to load.
"""

from __future__ import annotations


def model_classes() -> dict[str, type]:
    from sce_jax import model_kinds

    registries = (model_kinds.GENERATOR_KINDS, model_kinds.CLASSIFIER_NETWORKS,
                  model_kinds.PRIOR_NETWORKS, model_kinds.OTHER_MODELS)
    return {cls.__name__: cls for registry in registries for cls in registry.values()}


def model_class(name: str, *, where: str = "") -> type:
    classes = model_classes()
    if name not in classes:
        raise ValueError(f"{where}: unknown model class {name!r}; known: {sorted(classes)}")
    return classes[name]

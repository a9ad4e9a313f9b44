"""The configuration of a dataset-wide explanation run (``scripts/explain.py``).

Config files in ``configs/`` start from :func:`base_run_config` and set what differs; the
command line overrides any field (``--config.search.steps=50``). Every key is listed here
with its meaning; ml_collections refuses keys that are not (a typo fails before any work).
"""

from __future__ import annotations

import copy

import ml_collections

from sce_jax.assets import asset_path
from sce_jax.class_names import ClassNameError, class_index
from sce_jax.classifier import HEADS
from sce_jax.data.sources import DATA_SOURCES
from sce_jax.models.registry import DIFFUSERS_PRIORS, DTYPE_NAMES, GENERATOR_KINDS
from sce_jax.runs.config_ranges import range_problems
from sce_jax.runs.engines import ENGINE_NAMES
from sce_jax.runs.targets import RUN_TARGET_KINDS
from sce_jax.search.config import default_search_config


def base_run_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.source = ""            # image folder, .npz (images/labels) or .csv (path,target[,region])
    c.data.format = ""            # one of sce_jax.data.sources.DATA_SOURCES; '' picks by the source
                                  # (folder, squares .npz, .npz, .csv)
    c.data.image_size = (32, 32)  # (height, width) the generator works at
    c.data.channels = 1           # 1 (grey) or 3 (RGB)
    c.data.crop = False           # center-crop to the aspect ratio before resizing
    c.data.limit = 0              # explain only the first N examples (0: all)
    for name, source in DATA_SOURCES.items():  # data.<format>: that source's options
        if source.options():
            c.data[name] = source.options()

    c.generator = ml_collections.ConfigDict()
    c.generator.checkpoint = ""   # orbax checkpoint directory (scripts/convert_weights.py)
    c.generator.diffusers = ""    # or: a diffusers folder / pipeline folder / cached repo id
    c.generator.kind = "kl"       # with diffusers: one of sce_jax.models.registry.GENERATOR_KINDS,
                                  # "kl" (AutoencoderKL) or "tiny" (AutoencoderTiny)
    c.generator.dtype = "float32"  # compute dtype: "float32" or "bfloat16"

    c.classifier = ml_collections.ConfigDict()
    c.classifier.checkpoint = ""  # orbax checkpoint directory
    c.classifier.head = "multiclass"  # sce_jax.classifier.HEADS: "multiclass" (softmax) or
                                      # "multilabel" (sigmoid per output)
    c.classifier.input_size = ()  # resize inputs to (h, w) first; () keeps the generator's size
    c.classifier.channels = 0     # channels the network expects (0: as the data)
    c.classifier.mean = (0.0,)    # normalisation: (x - mean) / std per channel
    c.classifier.std = (1.0,)     # normalisation: the std per channel
    c.classifier.class_names = ()  # names of the outputs (index order): records, report, targets by name

    c.prior = ml_collections.ConfigDict()
    c.prior.checkpoint = ""       # orbax checkpoint of a velocity model (the demos' latent_flow
                                  # priors); used when search.prior.enabled
    c.prior.diffusers = ""        # or: a diffusers transformer folder / pipeline folder (its
                                  # transformer/) / cached repo id, of architecture prior.kind
    c.prior.kind = "sd3"          # with diffusers: one of sce_jax.models.registry.DIFFUSERS_PRIORS
    c.prior.dtype = "float32"     # with diffusers: compute and weight dtype, float32 or bfloat16
    c.prior.context = ""          # .npz of precomputed conditioning (prompt embeddings), if needed
                                  # (SD3: scripts/encode_prompt.py)

    c.targets = ml_collections.ConfigDict()
    c.targets.kind = "other"      # sce_jax.runs.targets.RUN_TARGET_KINDS: "other": leave the
                                  # predicted class; "class": reach class_index; "all_others":
                                  # reach every other class; "flip": flip an attribute
                                  # (multilabel); "csv": the CSV's target column
    c.targets.class_index = -1    # the class to reach (kind "class"), attribute to flip ("flip")
    c.targets.class_name = ""     # or that class by name (one of classifier.class_names)

    c.search = default_search_config()

    c.batch_size = 8              # images per batch and process (at most the process's share)
    c.engine = "auto"             # "slots": continuous batching, each search slot refilled as
                                  # soon as its attempt is done (sce_jax/runs/engines.py; one
                                  # process); "batch": a batch runs until its slowest search is
                                  # done; "auto": "slots" with one process, else "batch"
    c.slots = 0                   # searches in flight (engine "slots"; 0: as many as a batch has)
    c.chunk_steps = 0             # search steps between two refills of the slots (0: the
                                  # smallest multiple of search.mask.period >= 4, which keeps
                                  # the slots' mask updates in step)
    c.max_memory_gb = 0.0         # refuse a search needing more per device (0: the device's
                                  # memory; on CPU the machine's RAM)
    c.output = ml_collections.ConfigDict()
    c.output.heatmaps = True      # write diff_*.png heat maps of the change
    c.output.masks = True         # write mask_*.png edit masks
    c.output.report = True        # write report.html
    c.output.report_max_examples = 200  # images shown in report.html (the manifest has all)
    return c


class RunConfigError(ValueError):
    """A run configuration that cannot work, found before any work starts."""


def validate_run_config(config: ml_collections.ConfigDict) -> None:
    """Checks the values a run needs, with one clear message per problem.

    Every numeric key is checked against its range (:mod:`sce_jax.runs.config_ranges`); the
    ``search.*`` keys are checked by :func:`sce_jax.search.config.settings_from_config`.
    """
    problems = []

    def check_name(registry, name: str) -> None:  # a name the registry does not hold
        problem = registry.problem(name)
        if problem:
            problems.append(problem)

    if not config.data.source:
        problems.append("data.source is empty: name an image folder, an .npz or a .csv")
    if config.data.get("format"):
        check_name(DATA_SOURCES, config.data.format)
    def check_model(section: str, kinds) -> None:  # checkpoint or diffusers folder, kind, dtype
        model = config[section]
        if model.checkpoint and model.diffusers:
            problems.append(f"{section}: set only one of {section}.checkpoint and {section}.diffusers")
        check_name(kinds, model.kind)
        if model.dtype not in DTYPE_NAMES:
            problems.append(f"{section}.dtype={model.dtype!r}: must be {' or '.join(DTYPE_NAMES)}")

    if not (config.generator.checkpoint or config.generator.diffusers):
        problems.append("generator: set generator.checkpoint (orbax) or generator.diffusers")
    check_model("generator", GENERATOR_KINDS)
    if not config.classifier.checkpoint:
        problems.append("classifier.checkpoint is empty")
    check_name(HEADS, config.classifier.head)
    if config.search.prior.enabled and not (config.prior.checkpoint or config.prior.diffusers):
        problems.append("search.prior.enabled needs a prior: set prior.checkpoint or "
                        "prior.diffusers (or --config.search.prior.enabled=False)")
    check_model("prior", DIFFUSERS_PRIORS)
    check_name(RUN_TARGET_KINDS, config.targets.kind)
    needs_class = (config.targets.kind in RUN_TARGET_KINDS
                   and RUN_TARGET_KINDS[config.targets.kind].needs_class)
    if needs_class and config.targets.class_index < 0 and not config.targets.get("class_name"):
        problems.append(f"targets.kind={config.targets.kind!r} needs targets.class_index >= 0 "
                        "or targets.class_name")
    if config.engine not in ENGINE_NAMES:
        problems.append(f"engine={config.engine!r}: must be one of {ENGINE_NAMES}")
    # every numeric run key in its range (sce_jax/runs/config_ranges.py; search.* keys:
    # sce_jax.search.config.settings_from_config)
    problems.extend(range_problems(config))
    if problems:
        raise RunConfigError("the run config has problems:\n  " + "\n  ".join(problems))


def resolve_target_class(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``targets.class_name`` is turned into ``targets.class_index``.

    The name is looked up in ``classifier.class_names`` (:mod:`sce_jax.class_names`), so a run
    given ``class_name="Dress"`` and one given ``class_index=3`` record the same config (and a
    resume may use either form).

    Raises:
      RunConfigError: an unknown name (the message lists the names), a name and an index
        that disagree, or a name with a target kind that takes no class.
    """
    name = config.targets.get("class_name", "")
    if not name:
        return config
    if not (config.targets.kind in RUN_TARGET_KINDS
            and RUN_TARGET_KINDS[config.targets.kind].takes_class):
        raise RunConfigError(
            f"targets.class_name={name!r} is used with targets.kind 'class' (reach that class) "
            f"or 'flip' (flip that attribute), not {config.targets.kind!r}; add "
            "--config.targets.kind=class")
    try:
        index = class_index(name, tuple(config.classifier.class_names),
                            what="targets.class_name")
    except ClassNameError as e:
        raise RunConfigError(str(e)) from None
    if config.targets.class_index >= 0 and config.targets.class_index != index:
        raise RunConfigError(f"targets.class_name={name!r} is class {index} but "
                             f"targets.class_index={config.targets.class_index}; give only one")
    resolved = copy.deepcopy(config)
    resolved.targets.class_index = index
    resolved.targets.class_name = ""
    return resolved


def shipped_demo_config(demo: str, data_file: str, *, image_size: tuple[int, int], channels: int,
                        class_names, batch_size: int, arg: str | None = None,
                        validation_file: str | None = None):
    """The run config of a shipped demo (``configs/<demo>.py``): its data, models and prior
    from ``sce_jax/assets/<demo>/``, leave-the-prediction targets; ``arg="tiny"`` shrinks it to
    a seconds-long check (4 images, 5 steps, 2 noise samples); ``arg="validation"`` is the
    same run on the demo's validation images (``validation_file``), where settings are chosen:
    the test images the README reports are never tuned on."""
    c = base_run_config()
    validation = arg == "validation" and validation_file is not None
    c.data.source = asset_path(demo, validation_file if validation else data_file, must_exist=False)
    c.data.image_size = tuple(image_size)
    c.data.channels = channels
    c.generator.checkpoint = asset_path(demo, "autoencoder", must_exist=False)
    c.classifier.checkpoint = asset_path(demo, "classifier", must_exist=False)
    c.classifier.class_names = tuple(class_names)
    # The demo's latent flow-matching prior keeps edits on the autoencoder's image manifold.
    c.prior.checkpoint = asset_path(demo, "prior", must_exist=False)
    c.search.prior.enabled = True
    c.targets.kind = "other"
    c.batch_size = batch_size
    if arg == "tiny":
        c.data.limit = 4
        c.batch_size = 2
        c.search.steps = 5
        c.search.smoothing.num_samples = 2
    elif arg not in (None, "") and not validation:
        choices = "nothing, 'tiny'" + (" or 'validation'" if validation_file else "")
        raise ValueError(f"unknown config argument {arg!r}; use {choices}")
    return c

"""Classes by name wherever an index is accepted: the run config, a CSV's target column."""

import numpy as np
import pytest
from PIL import Image

from sce_jax import data
from sce_jax.class_names import ClassNameError, class_index, class_indices
from sce_jax.launch.config_files import load_config_module
from sce_jax.runs import config as run_config

NAMES = ("T-shirt/top", "Trouser", "Dress", "Ankle boot")


def test_index_name_and_digits_all_name_a_class():
    assert class_index(2, NAMES) == class_index("Dress", NAMES) == class_index("dress", NAMES) == 2
    assert class_index("2", NAMES) == class_index(np.int64(2), NAMES) == 2
    assert class_index(" Ankle boot ", NAMES) == 3
    assert class_indices(["Trouser", 0, "3"], NAMES).tolist() == [1, 0, 3]


def test_unknown_name_lists_every_name():
    with pytest.raises(ClassNameError, match=r"target 'Dres' is not a class name; the classes are: "
                                             r"T-shirt/top \(0\), Trouser \(1\), Dress \(2\), Ankle boot \(3\)"):
        class_index("Dres", NAMES)
    with pytest.raises(ClassNameError, match="has no class names"):
        class_index("Dress", None)


def _demo_config():
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_module(os.path.join(root, "configs", "fashion_mnist.py")).get_config()
    config.lock()
    return config


def test_run_config_class_name_becomes_the_index():
    config = _demo_config()
    config.targets.kind = "class"
    config.targets.class_name = "dress"
    resolved = run_config.resolve_target_class(config)
    assert resolved.targets.class_index == 3 and resolved.targets.class_name == ""
    assert config.targets.class_name == "dress"  # the caller's config is left alone
    config.targets.class_index = 4
    with pytest.raises(run_config.RunConfigError, match="is class 3 but targets.class_index=4"):
        run_config.resolve_target_class(config)


def test_run_config_class_name_needs_a_kind_that_takes_a_class():
    config = _demo_config()
    config.targets.class_name = "Dress"  # kind stays "other"
    with pytest.raises(run_config.RunConfigError, match=r"add --config.targets.kind=class"):
        run_config.resolve_target_class(config)


def test_csv_targets_by_name(tmp_path):
    Image.new("L", (8, 8), 128).save(tmp_path / "a.png")
    (tmp_path / "ok.csv").write_text("path,target\na.png,Dress\na.png,1\na.png,\na.png,ankle boot\n")
    dataset = data.open_dataset(str(tmp_path / "ok.csv"), image_size=(8, 8), channels=1,
                                num_classes=len(NAMES), class_names=NAMES)
    assert dataset.targets.tolist() == [2, 1, data.NO_LABEL, 3]
    (tmp_path / "bad.csv").write_text("path,target\na.png,Dress\na.png,Jacket\n")
    with pytest.raises(data.DataError, match=r"bad.csv line 3: target 'Jacket' is not a class name; "
                                             r"the classes are: T-shirt/top \(0\)"):
        data.open_dataset(str(tmp_path / "bad.csv"), image_size=(8, 8), channels=1, class_names=NAMES)
    with pytest.raises(data.DataError, match=r"line 2: target 'Dress' is a name, but the classifier "
                                             r"has no class names"):
        data.open_dataset(str(tmp_path / "bad.csv"), image_size=(8, 8), channels=1)

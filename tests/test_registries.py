"""The extension points' registries: names validated against their keys, entries used by the
run (generator kinds, data sources with their options, target kinds), datasets' factor masks."""

import json

import numpy as np
import pytest

from sce_jax import data, registry
from sce_jax.classifier import HEADS
from sce_jax.data import sources as data_sources
from sce_jax.demos import squares
from sce_jax.models import registry as model_kinds
from sce_jax.models.registry import model_classes
from sce_jax.runs import config as run_config
from sce_jax.runs import targets as run_targets
from sce_jax.search import targets
from sce_jax.workdir import layout as workdir_layout


def test_registry_names_the_known_keys_and_imports_on_first_use():
    table = registry.Registry("thing.kind", {"a": "numpy:float32", "b": len})
    assert table.names() == ("a", "b") and "a" in table and "c" not in table
    assert table.problem("a") is None
    assert table["a"] is np.float32 and table["b"] is len
    with pytest.raises(registry.UnknownNameError,
                       match=r"^unknown thing.kind 'c'; known: a, b$"):
        table["c"]
    assert table.problem("c") == "unknown thing.kind 'c'; known: a, b"


def test_run_config_refuses_names_outside_the_registries():
    c = run_config.base_run_config()
    c.data.source, c.generator.checkpoint, c.classifier.checkpoint = "x", "g", "f"
    c.search.prior.enabled = False
    run_config.validate_run_config(c)  # the defaults are registered names
    c.generator.kind, c.prior.kind, c.targets.kind, c.data.format = "vq", "dalle", "near", "tfr"
    c.classifier.head = "softmax"
    with pytest.raises(run_config.RunConfigError) as e:
        run_config.validate_run_config(c)
    for line in ("unknown generator.kind 'vq'; known: kl, tiny",
                 "unknown prior.kind 'dalle'; known: sd3, flux",
                 "unknown targets.kind 'near'; known: other, class, flip, all_others, csv",
                 "unknown data.format 'tfr'; known: folder, squares, npz, csv",
                 "unknown classifier.head 'softmax'; known: multiclass, multilabel"):
        assert line in str(e.value)


def test_checkpoint_classes_are_the_registered_models():
    classes = model_classes()
    for table in (model_kinds.GENERATOR_KINDS, model_kinds.CLASSIFIER_NETWORKS,
                  model_kinds.PRIOR_NETWORKS, model_kinds.OTHER_MODELS):
        for cls in table.values():
            assert classes[cls.__name__] is cls
    assert len(classes) == sum(len(t) for t in (
        model_kinds.GENERATOR_KINDS, model_kinds.CLASSIFIER_NETWORKS,
        model_kinds.PRIOR_NETWORKS, model_kinds.OTHER_MODELS))
    for cls in model_kinds.GENERATOR_KINDS.values():
        assert callable(getattr(cls, "from_pretrained"))


def test_search_target_kinds_name_a_head_and_the_run_kinds_a_search_kind():
    assert {kind.head for kind in targets.KINDS.values()} <= set(HEADS)
    for name, head in HEADS.items():
        for kind in (head.default_kind, head.kind_with_targets):
            assert targets.KINDS[kind].head == name
    for name, kind in run_targets.RUN_TARGET_KINDS.items():
        assert kind.search_kind in targets.KINDS, name


def _choice(**kw):
    defaults = dict(batch_targets=np.array([2, -1, 0], np.int32),
                    valid=np.array([True, True, False]), class_index=-1, num_outputs=3,
                    predict=lambda: np.array([0, 2, 1]))
    return run_targets.TargetChoice(**{**defaults, **kw})


def test_run_target_kinds_choose_each_batchs_searches():
    kinds = run_targets.RUN_TARGET_KINDS
    other = kinds["other"].choose(_choice())
    np.testing.assert_array_equal(other.targets, [-1, -1, -1])
    np.testing.assert_array_equal(other.rows, [0, 1, 2])
    np.testing.assert_array_equal(kinds["class"].choose(_choice(class_index=1)).targets, [1, 1, 1])
    np.testing.assert_array_equal(kinds["flip"].choose(_choice()).targets, [0, 0, 0])
    np.testing.assert_array_equal(kinds["flip"].choose(_choice(class_index=2)).targets, [2, 2, 2])
    others = kinds["all_others"].choose(_choice())
    np.testing.assert_array_equal(others.rows, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(others.targets, [1, 2, 0, 1, 2, 0])
    assert kinds["all_others"].searches_per_image(3) == 2 and kinds["class"].searches_per_image(3) == 1
    csv = kinds["csv"].choose(_choice())
    np.testing.assert_array_equal(csv.no_target, [1])  # valid, no target: a skip record
    assert csv.no_target_reason == "the CSV gives no target for this image"
    np.testing.assert_array_equal(csv.valid, [True, False, False])
    np.testing.assert_array_equal(csv.targets, [2, 0, 0])


def _npz(path, **extra):
    data.write_npz(str(path), images=np.zeros((3, 8, 8), np.uint8),
                   labels=np.array([0, 1, 0]), **extra)
    return str(path)


def test_data_sources_take_their_options_and_refuse_others(tmp_path):
    path = _npz(tmp_path / "a.npz", train_images=np.full((2, 8, 8), 255, np.uint8))
    ds = data.open_dataset(path, image_size=(8, 8), channels=1, images_key="train_images",
                           labels_key="")
    assert isinstance(ds, data.NpzDataset) and ds.num_examples == 2 and not ds.has_labels
    with pytest.raises(data.DataError, match=r"the npz data source takes no option\(s\) "
                                             r"image_key; it takes: images_key, labels_key"):
        data.open_dataset(path, image_size=(8, 8), channels=1, image_key="x")
    with pytest.raises(data.DataError, match=r"the folder data source takes no option\(s\) "
                                             r"images_key; it takes: none"):
        data.open_dataset(str(tmp_path), image_size=(8, 8), channels=1, images_key="x")
    with pytest.raises(data.DataError, match=r"unknown data.format 'tfr'; known: folder, "):
        data.open_dataset(path, image_size=(8, 8), channels=1, format="tfr")


def test_the_run_configs_data_sub_config_is_passed_through(tmp_path):
    path = _npz(tmp_path / "a.npz", test_images=np.full((2, 8, 8), 255, np.uint8))
    c = run_config.base_run_config()
    assert set(c.data.npz) == set(data.NpzDataset.options())
    c.data.source, c.data.image_size = path, (8, 8)
    c.data.npz.images_key, c.data.npz.labels_key = "test_images", ""
    ds = data.open_configured(c.data)
    assert ds.num_examples == 2 and float(ds.load(1).image.min()) == 1.0
    c.data.format = "csv"  # an explicit format is used as given
    with pytest.raises(data.DataError, match="cannot read CSV file|expected the header"):
        data.open_configured(c.data)


def test_squares_test_sets_give_their_factor_masks(tmp_path):
    path = str(tmp_path / "squares.npz")
    squares.write_test_set(path, num=4, seed=3, image_size=16)
    assert data.source_format(path) == "squares"
    ds = data.open_dataset(path, image_size=(16, 16), channels=3)
    assert isinstance(ds, squares.SquaresDataset)
    masks, why = ds.factor_masks([3, 1])
    boxes = squares.generate(4, seed=3, image_size=16).boxes
    np.testing.assert_array_equal(masks, squares.factor_masks(boxes[[3, 1]], 16))
    assert why == ""
    resized = data.open_dataset(path, image_size=(32, 32), channels=3)
    masks, why = resized.factor_masks([0])
    assert masks is None and "resized the (16, 16) images to (32, 32)" in why
    plain = data.open_dataset(_npz(tmp_path / "plain.npz"), image_size=(8, 8), channels=1)
    masks, why = plain.factor_masks([0])
    assert masks is None and why.endswith("has no known factor regions")


def test_configs_recorded_before_the_data_sub_configs_resume(tmp_path):
    c = run_config.base_run_config()
    c.data.npz.images_key, c.data.npz.labels_key = "train_images", ""
    today = json.loads(c.to_json_best_effort())
    old = json.loads(c.to_json_best_effort())
    old["data"].pop("format")
    npz = old["data"].pop("npz")
    old["data"]["npz_images_key"], old["data"]["npz_labels_key"] = npz["images_key"], npz["labels_key"]
    old["targets"].pop("class_name")
    assert workdir_layout.upgrade_recorded_config(old) == today
    assert "npz_images_key" in old["data"]  # the record read is not changed in place


def test_data_source_registry_lists_every_source_class():
    for name, kind in data_sources.DATA_SOURCES.items():
        assert issubclass(kind, data.Dataset), name


def test_an_image_measure_is_one_registry_line(monkeypatch):
    from sce_jax.evaluation import desiderata

    def max_change(originals, counterfactuals):
        return {"max_change": np.abs(counterfactuals - originals).max(axis=(1, 2, 3))}

    monkeypatch.setattr(desiderata, "IMAGE_MEASURES", registry.Registry("image measure", {
        "sparsity": "sce_jax.metrics.sparsity:sparsity", "max_change": max_change}))
    x = np.zeros((2, 4, 4, 1), np.float32)
    cf = x.copy()
    cf[0, 1, 1] = 0.5
    cf[1] = 0.25
    out = desiderata.image_measures(x, cf)
    assert set(out) == {"changed_fraction", "hoyer", "max_change"}
    np.testing.assert_allclose(out["max_change"], [0.5, 0.25])
    np.testing.assert_allclose(out["changed_fraction"], [1 / 16, 1.0])
    assert out["max_change"].dtype == np.float64

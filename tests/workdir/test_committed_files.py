"""The resume's check of committed files (sce_jax/workdir/committed_files.py): an example with a
missing file loses its records, so that the run explains it again."""

import logging
import os

from sce_jax.workdir import committed_files, layout


def _record(example_id, attempt=0, files=True):
    names = {"original": layout.image_file(example_id, "original"),
             "counterfactual": layout.image_file(example_id, "counterfactual", 1, attempt),
             "mask": layout.image_file(example_id, "mask", 1, attempt)} if files else {}
    return {"example_id": example_id, "source": f"img{example_id}.png", "label": None,
            "status": "ok" if files else "skipped", "reason": None, "target": 1 if files else -1,
            "attempt": attempt if files else -1, "files": names, "pixel_l1": 0.1 + example_id / 3}


def _workdir(tmp_path):
    """Parts p000-2 (examples 2, 3), p000-4 (4), p001-5 (5 skipped, 6) with every file."""
    root = str(tmp_path)
    layout.make_output_folders(root)
    parts = {(0, 2): [_record(2), _record(2, 1), _record(3)], (0, 4): [_record(4)],
             (1, 5): [_record(5, files=False), _record(6)]}
    for (process, _), records in parts.items():
        layout.write_part(root, process, records)
        for r in records:
            for name in r["files"].values():
                os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
                open(os.path.join(root, name), "wb").close()
    return root


def _parts(root):
    return sorted(os.listdir(os.path.join(root, layout.PARTS)))


def _bytes(root, name):
    with open(os.path.join(root, layout.PARTS, name), "rb") as f:
        return f.read()


def test_complete_workdir_is_left_alone(tmp_path):
    root = _workdir(tmp_path)
    before = {n: _bytes(root, n) for n in _parts(root)}
    assert committed_files.missing_files(root, layout.read_part_records(root)) == {}
    assert committed_files.redo_incomplete(root) == {}
    assert {n: _bytes(root, n) for n in _parts(root)} == before


def test_missing_files_are_found_per_example(tmp_path):
    root = _workdir(tmp_path)
    os.remove(os.path.join(root, layout.image_file(2, "counterfactual", 1, 1)))
    for name in os.listdir(os.path.join(root, layout.example_folder(6))):
        os.remove(os.path.join(root, layout.example_folder(6), name))
    os.rmdir(os.path.join(root, layout.example_folder(6)))
    assert committed_files.missing_files(root, layout.read_part_records(root)) == {
        2: [layout.image_file(2, "counterfactual", 1, 1)],
        6: sorted([layout.image_file(6, "counterfactual", 1, 0), layout.image_file(6, "mask", 1, 0),
                   layout.image_file(6, "original")])}


def test_examples_with_missing_files_lose_their_records_and_the_manifest_follows(tmp_path, caplog):
    root = _workdir(tmp_path)
    layout.assemble_manifest(root)
    kept = {name: _bytes(root, name) for name in _parts(root)}
    os.remove(os.path.join(root, layout.image_file(2, "original")))
    os.remove(os.path.join(root, layout.image_file(4, "mask", 1, 0)))
    with caplog.at_level(logging.WARNING):
        missing = committed_files.redo_incomplete(root)
    assert missing == {2: [layout.image_file(2, "original")], 4: [layout.image_file(4, "mask", 1, 0)]}
    assert f"example 2: 1 committed file(s) missing ({layout.image_file(2, 'original')}); " \
           "explaining it again" in caplog.text and "example 4: 1 committed file(s)" in caplog.text
    # p000-2 held 2 and 3: now p000-3 holds 3 alone; p000-4 is gone; p001-5 is untouched
    assert _parts(root) == ["p000-000000003.jsonl", "p001-000000005.jsonl"]
    assert _bytes(root, "p001-000000005.jsonl") == kept["p001-000000005.jsonl"]
    assert layout.read_part_records(root) == [_record(3), _record(5, files=False), _record(6)]
    assert layout.finished_ids(root) == {3, 5, 6}
    assert layout.read_manifest(root) == [_record(3), _record(5, files=False), _record(6)]
    # the examples explained again commit under their own ids: no remaining part is replaced
    layout.write_part(root, 0, [_record(2), _record(2, 1), _record(4)])
    assert layout.finished_ids(root) == {2, 3, 4, 5, 6}


def test_a_part_rewritten_in_place_keeps_its_name(tmp_path):
    root = _workdir(tmp_path)
    os.remove(os.path.join(root, layout.image_file(3, "original")))
    assert committed_files.redo_incomplete(root) == {3: [layout.image_file(3, "original")]}
    assert _parts(root) == ["p000-000000002.jsonl", "p000-000000004.jsonl", "p001-000000005.jsonl"]
    assert layout.finished_ids(root) == {2, 4, 5, 6}
    assert not os.path.exists(os.path.join(root, layout.MANIFEST))  # none was there: none made

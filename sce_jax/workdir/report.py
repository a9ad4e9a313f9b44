"""The HTML report of a run: one self-contained page a person can open and read.

:func:`write_report` reads ``manifest.jsonl`` and ``summary.json`` of a run's workdir (through
:mod:`sce_jax.workdir.layout`) and writes ``report.html`` beside them, linking the run's PNGs by
relative paths (the folder can be moved or zipped as a whole). The page holds:

1. the run summary (flip rate, mean distances, throughput, and any other summary field) and,
   once ``scripts/evaluate.py`` has run, its headline figures (validity on the PNGs,
   diversity, non-adversarial rate, FID, KID with its spread, ground truth);
2. one row per image: the original with its label and the classifier's decision, then per
   (target, attempt) the counterfactual, its difference heat map and edit mask, the target, the target
   probability before -> after, whether the decision changed (on the written 8-bit image),
   the steps and distances;
3. the inputs that were skipped, with their reasons;
4. when ``scripts/evaluate.py`` has evaluated the run, its plots: every PNG in
   ``evaluation/``, with a link to ``evaluation/metrics.json``.

Small images are enlarged by an integer factor with ``image-rendering: pixelated`` so
their pixels stay visible. All text from the manifest is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
import urllib.parse
from typing import Any, Iterable, Mapping, Sequence

from PIL import Image

from sce_jax.workdir import layout as workdir_files
from sce_jax.workdir.layout import EVALUATION, MANIFEST, REPORT, SUMMARY

DISPLAY_PIXELS = 160  # small images are enlarged to about this size (pixelated, no blur)

# Known summary fields: (key, label, format).
SUMMARY_FIELDS = (
    ("num_images", "images", "int"),
    ("num_skipped", "images skipped", "int"),
    ("num_counterfactuals", "counterfactuals", "int"),
    ("flip_rate", "flip rate (decision reached on the 8-bit image)", "percent"),
    ("flip_rate_first_attempt", "flip rate of the first attempts", "percent"),
    ("found_rate_first_attempt", "explanations found, first attempts (originals not near the boundary)", "percent"),
    ("num_near_boundary", "originals already near the decision boundary", "int"),
    ("num_no_second_reason", "later attempts with no second reason (only a background spot flipped it)", "int"),
    ("mean_latent_l1", "mean latent L1 distance (successful)", "number"),
    ("mean_pixel_l1", "mean pixel L1 distance (successful)", "number"),
    ("mean_pixel_l2", "mean pixel L2 distance (successful)", "number"),
    ("mean_changed_fraction", "mean share of pixels changed (successful)", "percent"),
    ("mean_steps", "mean optimisation steps", "number"),
    ("num_stalled", "attempts ended early (stalled: no progress, or too slow for the goal)", "int"),
    ("steps_share_not_found", "share of search steps spent on attempts that found nothing", "percent"),
    ("found_per_second", "found counterfactuals per second (runs that did work)", "number"),
    ("counterfactuals_per_second", "counterfactuals (attempts) per second", "number"),
    ("elapsed_seconds", "search time (runs that did work)", "seconds"),
)
HIDDEN_SUMMARY_FIELDS = ("runs",)  # shown as a sentence under the table

# Headline figures of evaluation/metrics.json (scripts/evaluate.py): (path, label, format).
EVALUATION_FIELDS = (
    (("validity", "flip_rate"), "flip rate re-checked on the PNGs", "percent"),
    (("diversity", "diversity_cosine", "mean"), "diversity (1 - |cos| between attempts)", "number"),
    (("non_adversarial", "rate"), "non-adversarial rate (surrogate agrees)", "percent"),
    (("realism", "fid"), "FID (classifier features)", "number"),
)
KID_NOTE = ("KID is an unbiased estimate of a squared distance: when originals and "
            "counterfactuals are indistinguishable at this sample size it scatters around 0 and "
            "can be negative; the spread is its standard deviation over subsets.")

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table.summary td, table.summary th, table.skipped td, table.skipped th {
  border-bottom: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.example { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start;
  border-top: 1px solid #ccc; padding: 0.8em 0; }
.card { font-size: 0.85em; width: min-content; min-width: 16em; overflow-wrap: anywhere; }
.card.original { background: #f4f4f4; padding: 0.4em; }
.images { display: flex; gap: 0.3em; }
figure { margin: 0; } figcaption { font-size: 0.8em; color: #555; }
img { border: 1px solid #bbb; }
img.pixelated { image-rendering: pixelated; image-rendering: crisp-edges; }
.ok { color: #08702a; font-weight: bold; } .failed { color: #b00020; font-weight: bold; }
.note { background: #fff6d5; padding: 0.5em; border: 1px solid #e5c100; }
.legend { color: #444; font-size: 0.9em; max-width: 60em; }
.missing { color: #b00020; font-size: 0.8em; }
.evaluation img { max-width: 100%; height: auto; }
"""


# ----------------------------------------------------------------------------- formatting

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any, kind: str = "number") -> str:
    """A summary or record value as text: None -> "n/a", percentages, seconds, 4 digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not _is_number(value):
        return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    if not math.isfinite(value):
        return str(value)
    if kind == "int":
        return str(int(value))
    if kind == "percent":
        return f"{100.0 * value:.1f}%"
    if kind == "seconds":
        return f"{value:.1f} s"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _probability(value: Any) -> str:
    return f"{value:.3f}" if _is_number(value) and math.isfinite(value) else "n/a"


class _Names:
    """Class index -> display text, with the name when one is known."""

    def __init__(self, class_names: Sequence[str] | None):
        self.names = tuple(class_names or ())

    def __call__(self, index: Any) -> str:
        if index is None or not _is_number(index) or index < 0:
            return "n/a"
        index = int(index)
        if index < len(self.names):
            return f"{self.names[index]} ({index})"
        return f"class {index}"


# ----------------------------------------------------------------------------- images

class _Images:
    """Relative links to the run's images, with their display size."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def relative(self, path: str) -> str:
        if os.path.isabs(path):
            path = os.path.relpath(path, self.workdir)
        return path.replace(os.sep, "/")

    def size(self, relative: str) -> tuple[int, int] | None:
        if relative not in self._sizes:
            try:
                with Image.open(os.path.join(self.workdir, relative)) as image:
                    self._sizes[relative] = image.size
            except (OSError, ValueError):
                self._sizes[relative] = None
        return self._sizes[relative]

    def tag(self, path: str | None, caption: str) -> str:
        """A ``<figure>`` with the image enlarged for display, or a note that it is missing."""
        if not path:
            return ""
        relative = self.relative(path)
        size = self.size(relative)
        if size is None:
            return (f'<figure><span class="missing">missing image: {_esc(relative)}</span>'
                    f"<figcaption>{_esc(caption)}</figcaption></figure>")
        width, height = size
        scale = max(1, DISPLAY_PIXELS // max(width, height))
        css = ' class="pixelated"' if scale > 1 else ""
        url = _esc(urllib.parse.quote(relative))
        return (f'<figure><img src="{url}" width="{width * scale}" '
                f'height="{height * scale}"{css} alt="{_esc(caption)}">'
                f"<figcaption>{_esc(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------- sections

def _summary_section(summary: Mapping[str, Any] | None) -> str:
    if summary is None:
        return f'<p class="note">{SUMMARY} was not found: no run summary.</p>'
    rows = []
    known = {key for key, _, _ in SUMMARY_FIELDS}
    for key, label, kind in SUMMARY_FIELDS:
        if key in summary:
            rows.append((label, key, format_value(summary[key], kind)))
    for key in sorted(summary):
        if key not in known and key not in HIDDEN_SUMMARY_FIELDS:
            kind = "percent" if key.endswith(("rate", "_fraction")) else "number"
            rows.append((key.replace("_", " "), key, format_value(summary[key], kind)))
    body = "".join(f'<tr><th title="{_esc(key)}">{_esc(label)}</th><td class="num">{_esc(text)}</td></tr>'
                   for label, key, text in rows)
    note = ""
    if summary.get("complete") is False:
        note = ('<p class="note">This run stopped before the end; rerunning it on the same '
                "workdir resumes where it stopped.</p>")
    runs = summary.get("runs")
    runs_text = ""
    if isinstance(runs, list) and len(runs) > 1:
        parts = [f"{r.get('counterfactuals')} in {format_value(r.get('elapsed_seconds'), 'seconds')}"
                 for r in runs if isinstance(r, Mapping)]
        runs_text = (f'<p class="legend">The work was done by {len(runs)} runs (resumed): '
                     f"{_esc('; '.join(parts))}.</p>")
    return f'<h2>Summary</h2>{note}<table class="summary">{body}</table>{runs_text}'


def _lookup(metrics: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _evaluation_summary(metrics: Mapping[str, Any] | None) -> str:
    """The headline figures of ``evaluation/metrics.json`` as a table, with the KID note."""
    if not metrics:
        return ""
    rows = [(label, format_value(_lookup(metrics, path), kind))
            for path, label, kind in EVALUATION_FIELDS if _lookup(metrics, path) is not None]
    kid, kid_std = _lookup(metrics, ("realism", "kid")), _lookup(metrics, ("realism", "kid_std"))
    if kid is not None:
        spread = f" &plusmn; {_esc(format_value(kid_std))}" if kid_std is not None else ""
        rows.append(("KID (classifier features)", None, f"{_esc(format_value(kid))}{spread}"))
    for factor, rate in sorted((_lookup(metrics, ("ground_truth", "dominant_rate")) or {}).items()):
        rows.append((f"ground truth: changes mostly the {factor}", format_value(rate, "percent")))
    all_found = _lookup(metrics, ("ground_truth", "all_found_rate"))
    if all_found is not None:
        rows.append(("ground truth: all factors found by the attempts", format_value(all_found, "percent")))
    body = "".join(
        f"<tr><th>{_esc(row[0])}</th><td class=\"num\">"
        f"{row[2] if len(row) == 3 else _esc(row[1])}</td></tr>" for row in rows)
    note = f'<p class="legend">{_esc(KID_NOTE)}</p>' if kid is not None else ""
    return (f'<h3>Evaluation (scripts/evaluate.py)</h3><table class="summary">{body}</table>'
            f"{note}")


def _target_text(record: Mapping[str, Any], names: _Names) -> tuple[str, str]:
    """(what the search aimed for, what its probability measures)."""
    kind = record.get("target_kind", "class")
    target = names(record.get("target"))
    if kind == "other":
        return f"leave {target}", f"p(not {target})"
    if kind == "flip":
        return f"flip attribute {target}", "p(flipped)"
    return f"reach {target}", f"p({target})"


def _counterfactual_card(record: Mapping[str, Any], names: _Names, images: _Images) -> str:
    files = record.get("files") or {}
    aim, measure = _target_text(record, names)
    success = bool(record.get("success"))
    mark = ('<span class="ok" title="the classifier gives the target decision">&#10003; changed</span>'
            if success else
            '<span class="failed" title="the target decision was not reached">&#10007; not reached</span>')
    if record.get("nonfinite"):
        mark += ' <span class="failed">(numerical failure)</span>'
    if record.get("outcome") == "near_boundary":
        mark += (' <span class="failed" title="the original was already within the boundary '
                 'margin: a tiny change flips it">(original near the boundary: no explanation)</span>')
    if record.get("outcome") == "stalled":
        mark += (' <span class="failed" title="no progress, or too slow to reach the goal in its '
                 'budget: the search ended early">(stalled)</span>')
    if record.get("outcome") == "no_second_reason":
        mark = ('<span class="failed" title="only a spot painted into empty background flipped '
                'the decision">no second reason found</span>')
    lines = [
        f"<b>{_esc(aim)}</b>, attempt {_esc(record.get('attempt', 0))}",
        f"{_esc(measure)}: {_probability(record.get('prob_target_before'))} &rarr; "
        f"{_probability(record.get('prob_target_after'))} {mark}",
        f"decision now: {_esc(names(record.get('prediction_after')))}",
        f"{_esc(format_value(record.get('steps'), 'int'))} steps &middot; pixel L1 "
        f"{_esc(format_value(record.get('pixel_l1')))} &middot; latent L1 "
        f"{_esc(format_value(record.get('latent_l1')))} &middot; changed "
        f"{_esc(format_value(record.get('changed_fraction'), 'percent'))}",
    ]
    figures = images.tag(files.get("counterfactual"), "counterfactual") + \
        images.tag(files.get("difference"), "difference") + \
        images.tag(files.get("mask"), "edit mask")
    return (f'<div class="card"><div class="images">{figures}</div>'
            + "".join(f"<div>{line}</div>" for line in lines) + "</div>")


def _original_card(record: Mapping[str, Any], names: _Names, images: _Images) -> str:
    files = record.get("files") or {}
    label = record.get("label")
    prediction = record.get("prediction")
    source = str(record.get("source", ""))
    lines = [f'<b>#{_esc(record["example_id"])}</b> '
             f'<span title="{_esc(source)}">{_esc(os.path.basename(source))}</span>',
             f"label: {_esc(names(label))}",
             f"decision: {_esc(names(prediction))}, p {_probability(record.get('prob_prediction'))}"]
    if _is_number(label) and _is_number(prediction) and label != prediction:
        lines.append('<span class="failed">misclassified</span>')
    return (f'<div class="card original">{images.tag(files.get("original"), "original")}'
            + "".join(f"<div>{line}</div>" for line in lines) + "</div>")


def _examples_section(records: Sequence[Mapping[str, Any]], names: _Names, images: _Images,
                      max_examples: int) -> str:
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok":
            groups.setdefault(r["example_id"], []).append(r)
    ids = sorted(groups)
    shown = ids[:max(0, max_examples)]
    parts = [f"<h2>Counterfactuals ({len(ids)} images)</h2>"]
    if len(shown) < len(ids):
        parts.append(f'<p class="note">Showing the first {len(shown)} of {len(ids)} images; '
                     f"{MANIFEST} lists all of them.</p>")
    for example_id in shown:
        rows = sorted(groups[example_id], key=lambda r: (r.get("target", -1), r.get("attempt", 0)))
        cards = [_original_card(rows[0], names, images)]
        cards += [_counterfactual_card(r, names, images) for r in rows]
        parts.append(f'<div class="example" id="example-{_esc(example_id)}">{"".join(cards)}</div>')
    return "".join(parts)


def _skipped_section(records: Iterable[Mapping[str, Any]]) -> str:
    skipped = sorted((r for r in records if r.get("status") != "ok"), key=lambda r: r["example_id"])
    if not skipped:
        return "<h2>Skipped inputs</h2><p>None: every input was read.</p>"
    rows = "".join(f'<tr><td class="num">{_esc(r["example_id"])}</td><td>{_esc(r.get("source", ""))}'
                   f'</td><td>{_esc(r.get("reason") or r.get("status"))}</td></tr>' for r in skipped)
    return (f"<h2>Skipped inputs ({len(skipped)})</h2><table class=\"skipped\">"
            f"<tr><th>id</th><th>source</th><th>reason</th></tr>{rows}</table>")


def _evaluation_section(images: _Images) -> str:
    """The evaluation's plots (PNGs in ``evaluation/``), or nothing when there are none."""
    folder = os.path.join(images.workdir, EVALUATION)
    try:
        names = sorted(n for n in os.listdir(folder)
                       if n.lower().endswith(".png") and not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return ""
    if not names:
        return ""
    metrics = f"{EVALUATION}/{workdir_files.EVALUATION_METRICS}"
    link = ""
    if os.path.isfile(os.path.join(images.workdir, metrics)):
        link = (f'<p>All numbers: <a href="{_esc(urllib.parse.quote(metrics))}">'
                f"{_esc(metrics)}</a></p>")
    figures = "".join(images.tag(f"{EVALUATION}/{name}", os.path.splitext(name)[0].replace("_", " "))
                      for name in names)
    return f'<h2>Evaluation</h2>{link}<div class="evaluation">{figures}</div>'


LEGEND = (
    "Each row shows one input image (grey card: its true label and the classifier's decision "
    "with its probability) and, for every target and attempt, the counterfactual: the changed "
    "image the classifier was asked to decide differently on. "
    "<b>&#10003; changed</b> means the classifier gives the target decision on the image exactly "
    "as saved (8-bit PNG). The probability shown is the classifier's probability of the target "
    "decision before and after the change. The <b>difference</b> map shows where the image "
    "changed: |counterfactual &minus; original| summed over colour channels, from dark violet "
    "(small) through red to pale yellow (largest change), laid over the grey original. "
    "Later attempts of one image may not change what earlier successful attempts changed, so "
    "they show other reasons for the decision. The <b>edit mask</b> shows where the search "
    "was allowed to change the image (white). Images are enlarged with their pixels kept "
    "sharp.")


def render_report(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None, *,
                  workdir: str, class_names: Sequence[str] | None = None,
                  max_examples: int = 200, title: str | None = None) -> str:
    """The report page as an HTML string (images linked relative to ``workdir``)."""
    names = _Names(class_names)
    images = _Images(workdir)
    title = title or f"Counterfactual explanations: {os.path.basename(os.path.normpath(workdir))}"
    body = (f"<h1>{_esc(title)}</h1><p class=\"legend\">{LEGEND}</p>"
            + _summary_section(summary)
            + _evaluation_summary(workdir_files.read_evaluation_metrics(workdir))
            + _evaluation_section(images)
            + _examples_section(records, names, images, max_examples)
            + _skipped_section(records))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n<body>{body}</body></html>\n")


def write_report(workdir: str, *, class_names: Sequence[str] | None = None,
                 max_examples: int = 200) -> str:
    """Writes ``workdir/report.html`` from the manifest and summary; returns its path.

    Args:
      workdir: a run's output folder (``manifest.jsonl``, ``summary.json``, images).
      class_names: display names of the classifier's outputs (index -> name).
      max_examples: images shown with their counterfactuals (skipped inputs are all listed).

    Raises:
      WorkdirReadError: the manifest is missing or not valid JSON lines, or the summary is
        not a JSON object.
    """
    workdir = os.path.abspath(workdir)
    records = workdir_files.read_manifest(workdir)
    summary = workdir_files.read_summary(workdir)
    page = render_report(records, summary, workdir=workdir, class_names=class_names,
                         max_examples=max_examples)
    path = os.path.join(workdir, REPORT)
    workdir_files.write_text(path, page)
    return path

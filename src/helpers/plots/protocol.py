"""The primary study's Figure 2 and Tables 2-3, generated from a study's parameters and its data: split
sizes, class balance, the sparsity scenarios and the training configuration beside the paper's (notebook 01).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from helpers.plots.style import (
    PAPER_TABLES,
    SCENARIO_ORDER,
    _label,
    _legend_outside,
    _require,
    _suptitle,
    _theme,
    save_figure,
)
from helpers.published import PAPER_PROTOCOL


_SPLITS = ("train", "val", "test")


def _as_mapping(params) -> Mapping[str, object]:
    """A study's parameters as a mapping (``helpers.config.StudyParams`` or a plain dict)."""
    return params if isinstance(params, Mapping) else params.to_dict()


def split_table(params: Mapping[str, object], load_splits) -> pd.DataFrame:
    """Images per class in every split of every dataset, loaded as the study's runs load them, from ``params``
    (``helpers.config.load_params``: datasets, models, split subsets, ``model_options`` with a model's own
    subsets, ``dataset_options``, ``data_root``, ``image_size``, ``data_seed``) with ``load_splits``
    (``helpers.data.load_splits``, passed in: this module reads tables only). One row per dataset x split x class:
    ``dataset``, ``models`` (those trained on these splits; models with their own subsets get their own rows),
    ``split``, ``class``, ``images``, ``same_as`` (``test`` for a validation split that is the test split itself,
    as in VisA's protocol)."""
    params = _as_mapping(params)
    rows = []
    dataset_options = params.get("dataset_options") or {}
    model_options = params.get("model_options") or {}
    for dataset in params["datasets"]:
        groups: dict[str, tuple[dict[str, object], list[str]]] = {}
        for model in params["models"]:
            subsets = {k: params.get(k) for k in ("train_subset", "val_subset", "test_subset")}
            subsets.update({k: v for k, v in (model_options.get(model) or {}).items() if k in subsets})
            key = repr(sorted(subsets.items()))
            groups.setdefault(key, (subsets, []))[1].append(model)
        for subsets, models in groups.values():
            splits = load_splits(dataset, root=params.get("data_root"), size=params.get("image_size"),
                                 seed=params.get("data_seed", 0), download=True, **subsets,
                                 **dict(dataset_options.get(dataset) or {}))  # fmt: skip
            for name in _SPLITS:
                split = splits[name]
                same = "test" if name == "val" and split is splits["test"] else ""
                for cls, count in zip(split.classes, split.class_counts()):
                    rows.append({"dataset": dataset, "models": ", ".join(models), "split": name, "class": cls,
                                 "images": int(count), "same_as": same})  # fmt: skip
    return pd.DataFrame(rows, columns=["dataset", "models", "split", "class", "images", "same_as"])


def dataset_table(splits: pd.DataFrame) -> pd.DataFrame:
    """The numbers behind Figure 2 from :func:`split_table`: per dataset (and models group), classes, images
    per split, each split's share of the whole, and the class balance: the largest class's share of the test
    split (the accuracy of always answering it) and the largest / smallest class ratio of the training split."""
    _require(splits, ["dataset", "models", "split", "class", "images"], "dataset_table")
    rows = []
    for (dataset, models), group in splits.groupby(["dataset", "models"], sort=False):
        sizes = group.groupby("split")["images"].sum()
        same = group.loc[group["split"] == "val", "same_as"].astype(str).eq("test").any() if "same_as" in group else False
        distinct = sizes.get("train", 0) + sizes.get("test", 0) + (0 if same else sizes.get("val", 0))
        train = group[group["split"] == "train"]["images"]
        test = group[group["split"] == "test"]["images"]
        row = {"dataset": _label("dataset", dataset), "models": models, "classes": int(group["class"].nunique())}
        for name in _SPLITS:
            row[f"{name} images"] = int(sizes.get(name, 0))
        row["val"] = "the test split itself" if same else "its own split"
        row["split (train / val / test, %)"] = " / ".join(
            "=test" if (name == "val" and same) else f"{100 * sizes.get(name, 0) / distinct:.0f}" for name in _SPLITS
        ) if distinct else ""
        row["majority class, test (%)"] = round(100 * test.max() / test.sum(), 1) if test.sum() else math.nan
        row["largest / smallest class, train"] = round(train.max() / train.min(), 2) if len(train) and train.min() > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def class_balance(splits: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Figure 2 (paper), ``fig02_class_balance.{png,svg}`` in ``figures_dir``: the datasets of ``splits``
    (:func:`split_table`) as the study ran them, each class's share of each split, one panel per dataset (and
    models group with its own subsets), split sizes in the panel title."""
    _require(splits, ["dataset", "models", "split", "class", "images"], "class_balance")
    panels = list(dict.fromkeys(zip(splits["dataset"], splits["models"])))
    if not panels:
        raise ValueError("class_balance: the split table is empty; build it with plots.split_table(params, data.load_splits)")
    colours = dict(zip(_SPLITS, sns.color_palette("colorblind", 3).as_hex()))
    with _theme():
        widths = [max(3.2, 0.45 * splits.loc[splits["dataset"] == d, "class"].nunique() + 1.4) for d, _ in panels]
        fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained",
                                 figsize=(sum(widths), 3.4), width_ratios=widths)  # fmt: skip
        for ax, (dataset, models) in zip(axes[0], panels):
            group = splits[(splits["dataset"] == dataset) & (splits["models"] == models)]
            classes = list(dict.fromkeys(group["class"]))
            sizes = group.groupby("split")["images"].sum()
            for k, name in enumerate(_SPLITS):
                part = group[group["split"] == name].set_index("class")["images"].reindex(classes).fillna(0)
                share = 100 * part / max(part.sum(), 1)
                ax.bar(np.arange(len(classes)) - 0.27 + 0.27 * k, share, width=0.27, color=colours[name],
                       edgecolor="black", linewidth=0.4, label=name)  # fmt: skip
            same = group.loc[group["split"] == "val", "same_as"].astype(str).eq("test").any()
            sizes_text = ", ".join(f"{n} {int(sizes.get(n, 0))}" + (" (= test)" if n == "val" and same else "") for n in _SPLITS)
            ax.set_title(f"{_label('dataset', dataset)} ({models})\n{sizes_text}", fontsize="small")
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels([textwrap.shorten(str(c), 18) for c in classes], rotation=45, ha="right", fontsize=7)
            ax.set_ylabel("share of the split (%)")
            ax.grid(axis="x", visible=False)
        handles = [Patch(facecolor=colours[n], edgecolor="black", linewidth=0.4) for n in _SPLITS]
        _legend_outside(fig, handles, list(_SPLITS), "split")
        _suptitle(fig, f"Figure {PAPER_TABLES['class_balance']} (paper): the datasets as this study ran them — images "
                       "per split and each class's share of its split")
    save_figure(fig, figures_dir, f"fig{PAPER_TABLES['class_balance']:02d}_class_balance")
    return fig


def scenario_table(params: Mapping[str, object]) -> pd.DataFrame:
    """Table 2 (paper): the sparsity scenarios of ``params`` (validated: scenarios resolved to ``{name, conv,
    linear}``), with what each removes and how."""
    params = _as_mapping(params)
    rows = []
    for scenario in params["scenarios"]:
        name, conv, linear = scenario["name"], float(scenario["conv"]), float(scenario["linear"])
        rows.append({
            "scenario": name, "conv filters removed (%)": round(100 * conv, 1),
            "linear weights removed (%)": round(100 * linear, 1),
            "conv (structured)": "whole output filters, smallest L1 norm, every conv layer" if conv else "none",
            "linear (unstructured)": "single weights, smallest |w|, every linear layer" if linear else "none",
            "as the paper": "yes" if name in SCENARIO_ORDER else "no (own scenario)",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table.attrs["title"] = f"Table {PAPER_TABLES['scenarios']} (paper): sparsity scenarios"
    return table


def _protocol_value(params: Mapping[str, object], key: str) -> object:
    if key == "seeds":
        return len(params["seeds"])
    if key == "loss":
        return "cross-entropy"  # the study's only loss (helpers.train)
    if key == "inference device":
        inference = params.get("inference") or {}
        return f"cpu, batch {', '.join(str(b) for b in inference.get('batch_sizes', [1]))}"
    value = params.get(key)
    return value if not isinstance(value, list) else ", ".join(map(str, value))


def configuration_table(params: Mapping[str, object]) -> pd.DataFrame:
    """Table 3 (paper): the configuration of ``params`` (validated) beside the paper's protocol
    (:data:`helpers.published.PAPER_PROTOCOL`), each setting marked as the paper's or not, then the settings
    the paper does not fix (models, datasets, methods, subsets, image size, per-model budgets, threads,
    inference samples)."""
    params = _as_mapping(params)
    rows = []
    for key, paper in PAPER_PROTOCOL.items():
        ours = _protocol_value(params, key)
        same = ours == paper or (isinstance(paper, float) and isinstance(ours, (int, float)) and math.isclose(ours, paper))
        rows.append({"setting": key, "this study": str(ours), "paper": str(paper), "as the paper": "yes" if same else "no"})
    inference = params.get("inference") or {}
    others = {
        "datasets": ", ".join(params["datasets"]), "models": ", ".join(params["models"]),
        "methods": ", ".join(params.get("methods", [])), "image_size": params.get("image_size"),
        "train / val / test subsets": " / ".join(str(params.get(k)) for k in ("train_subset", "val_subset", "test_subset")),
        "model_options": params.get("model_options") or "none", "dataset_options": params.get("dataset_options") or "none",
        "device": params.get("device"), "threads (training / inference)": f"{params.get('threads')} / {inference.get('threads')}",
        "inference samples / warm-up": f"{inference.get('samples')} / {inference.get('warmup')}",
    }  # fmt: skip
    for key, value in others.items():
        rows.append({"setting": key, "this study": str(value), "paper": "", "as the paper": ""})
    table = pd.DataFrame(rows)
    table.attrs["title"] = f"Table {PAPER_TABLES['configuration']} (paper): configuration"
    return table

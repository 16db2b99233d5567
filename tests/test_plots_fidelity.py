"""Issue 12's figure and table points on small synthetic tables: SET's MACs ratio beside every figure that
compares it (1), figures per training form and sentences generated from the tables (2), Table 1 with best
and final epochs beside the published figures (4), the majority-class line (6), runs left out of a mean
are shown (8), and the paper's Figure 2 and Tables 2-3 from the parameters and the data (9)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_plots import make_tables  # noqa: E402

from helpers import plots  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SET_MACS, OTHER_MACS, DENSE_MACS = 6_000_000, 3_000_000, 12_000_000


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _title(fig) -> str:
    return " ".join(fig._suptitle.get_text().split())


def _texts(fig) -> list[str]:
    return [" ".join(t.get_text().split()) for ax in fig.axes for t in ax.texts]


def tables(seeds=(0,), **kwargs) -> dict[str, pd.DataFrame]:
    """make_tables with SET at 50 % of the dense MACs (erk-like), the other methods at 25 %, every pruned
    run trained compacted (linear_only and dense masked, as config.training_form resolves them)."""
    t = make_tables(seeds=seeds, **kwargs)
    inf = t["inference"]
    inf.loc[(inf["variant"] == "compacted") & (inf["method"] == "set"), "macs"] = SET_MACS
    runs = t["runs"]
    runs["training_form"] = np.where((runs["method"] == "dense") | (runs["scenario"] == "linear_only"), "masked", "compacted")
    runs["test_majority_accuracy"] = 0.3
    runs["best_epoch"] = 1
    for m in ("accuracy", "precision", "recall", "f1", "auc"):
        runs[f"test_{m}_best"] = pd.to_numeric(runs.get(f"test_{m}"), errors="coerce") + 0.01
    return t


def diverge(t: dict[str, pd.DataFrame], method="set", scenario="uniform", model="vgg16", seed=0) -> str:
    """Mark one run diverged as the runner records it: no test metrics, no inference rows, history kept."""
    runs = t["runs"]
    sel = (runs["method"] == method) & (runs["scenario"] == scenario) & (runs["model"] == model) & (runs["seed"] == seed)
    run_id = runs.loc[sel, "run_id"].iloc[0]
    runs.loc[sel, "status"] = "diverged"
    runs.loc[sel, "train_time_s"] = 999.0
    runs.loc[sel, [c for c in runs.columns if c.startswith("test_")]] = math.nan
    t["inference"] = t["inference"][t["inference"]["run_id"] != run_id].reset_index(drop=True)
    return run_id


# ----------------------------------------------------------------------------- 1. MACs ratio beside SET


def test_macs_ratio_is_the_compacted_model_over_the_dense_run():
    t = tables()
    run_id = diverge(t)
    ratios = plots.macs_ratio_table(t["inference"], t["runs"]).set_index("run_id")
    assert math.isnan(ratios.loc[run_id, "macs_ratio"])  # diverged: listed, no measurement
    done = ratios.drop(index=run_id)
    assert (done.loc[done["method"] == "set", "macs_ratio"] == SET_MACS / DENSE_MACS).all()
    assert (done.loc[done["method"] == "pre_training", "macs_ratio"] == OTHER_MACS / DENSE_MACS).all()
    assert (done.loc[done["method"] == "dense", "macs_ratio"] == 1.0).all()
    assert {"training_form", "status"} <= set(ratios.columns)


@pytest.mark.parametrize("figure", ["training_time", "peak_memory", "training_energy", "test_metrics"])
def test_every_bar_figure_comparing_set_writes_each_methods_macs_ratio(tmp_path, figure):
    t = tables()
    fig = getattr(plots, figure)(t["runs"], tmp_path, inference=t["inference"])["mixed"]
    texts = _texts(fig)
    assert sum("MACs 50 %" in x for x in texts) == 2  # SET, one per model panel
    assert sum("MACs 25 %" in x for x in texts) == 2 * 3  # pre, in, post
    assert sum("MACs 100 %" in x for x in texts) == 2  # the dense reference
    assert "MACs = the compacted model's multiply-accumulates as % of the dense model's" in _title(fig)


def test_training_curves_and_inference_figures_write_the_macs_ratio(tmp_path):
    t = tables()
    curves = plots.training_curves(t["epochs"], tmp_path, runs=t["runs"], inference=t["inference"])["uniform"]
    assert all("SET 50 %" in x and "Pre 25 %" in x for x in _texts(curves) if x.startswith("MACs vs dense"))
    assert sum(x.startswith("MACs vs dense") for x in _texts(curves)) == 2
    latency = plots.inference_latency(t["inference"], tmp_path, runs=t["runs"])
    compacted_axes = [ax for ax in latency.axes if ax.get_title().endswith("compacted")]
    assert compacted_axes and all(any("MACs 50 %" in x.get_text() for x in ax.texts) for ax in compacted_axes)
    masked_axes = [ax for ax in latency.axes if ax.get_title().endswith("masked")]
    assert not any("MACs" in x.get_text() for ax in masked_axes for x in ax.texts)  # masked computes dense MACs
    pareto = plots.accuracy_latency_pareto(t["inference"], t["runs"], tmp_path)
    assert "50 %" in _texts(pareto) and "25 %" in _texts(pareto)


def test_macs_label_shows_a_range_when_runs_differ():
    assert plots.primary._macs_label([0.05, 0.071]) == "MACs 5.0-7.1 %"
    assert plots.primary._macs_label([0.42, 0.42]) == "MACs 42 %"
    assert plots.primary._macs_label([math.nan]) == "MACs n/a"


# --------------------------------------------------------------------------- 2. per training form


def two_forms() -> dict[str, pd.DataFrame]:
    """training_form: [masked, compacted]: every pruned run with conv sparsity twice, once per form."""
    t = tables()
    runs = t["runs"]
    twin = runs[(runs["method"] != "dense") & (runs["scenario"] != "linear_only")].copy()
    twin["training_form"] = "masked"
    twin["run_id"] = twin["run_id"] + "-masked"
    twin["train_time_s"] = 50.0
    t["runs"] = pd.concat([runs, twin], ignore_index=True)
    inf = t["inference"]
    twin_inf = inf[inf["run_id"].isin(twin["run_id"].str.removesuffix("-masked"))].copy()
    twin_inf["run_id"] = twin_inf["run_id"] + "-masked"
    t["inference"] = pd.concat([inf, twin_inf], ignore_index=True)
    return t


def test_time_energy_and_memory_are_drawn_per_training_form(tmp_path):
    t = two_forms()
    for function in (plots.training_time, plots.training_energy, plots.peak_memory):
        fig = function(t["runs"], tmp_path)["uniform"]
        titles = [ax.get_title() for ax in fig.axes if ax.has_data()]
        assert sum("trained masked" in x for x in titles) == 2 and sum("trained compacted" in x for x in titles) == 2
        assert "training forms masked and compacted side by side" in _title(fig)
    fig = plots.training_time(t["runs"], tmp_path)["uniform"]
    for ax in fig.axes:
        heights = {round(p.get_height(), 3) for p in ax.patches}
        if "trained masked" in ax.get_title():
            assert 50.0 in heights and 10.0 in heights  # the masked runs and the dense reference
        elif "trained compacted" in ax.get_title():
            assert 50.0 not in heights  # never averaged with the masked twins
    assert "runs trained masked and compacted pooled in each mean" in _title(
        plots.inference_latency(t["inference"], tmp_path, runs=t["runs"]))
    linear_only = plots.training_time(t["runs"], tmp_path)["linear_only"]
    assert "training form: masked" in _title(linear_only)  # nothing to compact there


def test_one_form_is_named_in_the_title(tmp_path):
    t = tables()
    fig = plots.training_time(t["runs"], tmp_path)["uniform"]
    assert "training form: compacted; dense baseline: masked" in _title(fig)
    assert "Figure 9 (paper)" in _title(fig)
    masked = t["runs"].assign(training_form="masked")
    assert "training form: masked;" in _title(plots.training_energy(masked, tmp_path)["mixed"])


def test_training_form_statement_says_what_was_run():
    t = tables()
    text = plots.training_form_statement(t["runs"])
    assert "trained **compacted** (pre_training in uniform, mixed; in_training in uniform, mixed;" in text
    assert "trained **masked** (the dense baseline; pre_training in linear_only;" in text
    masked_only = plots.training_form_statement(t["runs"].assign(training_form="masked"))
    assert "**compacted**" not in masked_only and "dense kernels still compute the zeros" in masked_only
    compacted = t["runs"][t["runs"]["training_form"] == "compacted"]
    assert "**masked**" not in plots.training_form_statement(compacted)


def _markdown(notebook: str) -> list[str]:
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def _code(notebook: str) -> str:
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("notebook", ["01_training.ipynb", "04_energy.ipynb"])
def test_notebooks_generate_the_training_form_sentences(notebook):
    """The training form is said by plots.training_form_statement (from the runs table), never hard-coded."""
    assert "plots.training_form_statement(" in _code(notebook)
    training_markdown = _markdown(notebook)
    if notebook == "04_energy.ipynb":  # its intro and inference section are about the masked / compacted *models*
        start = next(i for i, m in enumerate(training_markdown) if m.startswith("## Total training energy"))
        end = next(i for i, m in enumerate(training_markdown) if m.startswith("## Inference energy"))
        training_markdown = training_markdown[start:end]
    for text in training_markdown:
        assert "masked" not in text.lower() and "compacted" not in text.lower(), text


@pytest.mark.parametrize("notebook", ["01_training.ipynb", "02_test_accuracy.ipynb", "03_inference.ipynb", "04_energy.ipynb"])
def test_notebooks_hand_the_figures_what_they_need(notebook):
    code = _code(notebook)
    for call in ("training_time(", "peak_memory(", "training_energy(", "test_metrics(", "training_curves("):
        for line in code.splitlines():
            if f"plots.{call}" in line:
                assert 'inference=tables["inference"]' in line, line
    for call in ("inference_latency(", "inference_energy(", "speedup_vs_macs("):
        for line in code.splitlines():
            if f"plots.{call}" in line:
                assert 'runs=tables["runs"]' in line, line


# ----------------------------------------------------------------------------------------- 4. Table 1


def test_table1_shows_best_and_final_epochs_beside_the_papers_mixed_figures():
    t = tables(datasets=("bloodmnist",))
    table = plots.reference_accuracy_table(t["runs"], scenario="mixed")
    vgg_set = table[(table["model"] == "VGG16") & (table["method"] == "set")].iloc[0]
    assert vgg_set["accuracy, final epoch (%)"] == pytest.approx(70.0)
    assert vgg_set["accuracy, best epoch (%)"] == pytest.approx(71.0)
    assert vgg_set["published (%)"] == 92.4 and "Douzandeh Zenoozi" in vgg_set["published source"]
    assert "Table 1" in vgg_set["published source"]
    resnet_pre = table[(table["model"] == "ResNet18") & (table["method"] == "pre_training")].iloc[0]
    assert resnet_pre["published (%)"] == 92.3
    for metric in ("accuracy", "precision", "recall", "f1", "auc"):
        assert {f"{metric}, best epoch (%)", f"{metric}, final epoch (%)"} <= set(table.columns)
    assert (table["majority class (%)"] == 30.0).all() and (table["best epoch"] == 1.0).all()
    uniform = plots.reference_accuracy_table(t["runs"], scenario="uniform")
    assert not uniform.loc[uniform["method"] != "dense", "published source"].str.contains("Douzandeh").any()


def test_table1_shows_the_published_figures_where_nothing_was_run():
    table = plots.reference_accuracy_table(tables()["runs"], scenario="mixed", dataset=None)
    blood = table[table["dataset"] == "BloodMNIST"]
    assert set(blood["published (%)"]) == {94.85, 91.93, 95.8, 92.4, 92.3}
    assert (blood["runs"] == "not run").all()
    assert set(table["dataset"]) == {"BloodMNIST", "digits"}


# --------------------------------------------------------------------------------- 6. majority line


def test_every_test_accuracy_plot_draws_the_majority_class_line(tmp_path):
    t = tables()
    t["runs"].loc[t["runs"]["model"] == "resnet18", "test_majority_accuracy"] = 0.889
    figures = plots.test_metrics(t["runs"], tmp_path)
    for fig in figures.values():
        lines = {ax.get_title(): [ln for ln in ax.get_lines() if ln.get_gid() == "majority_class"] for ax in fig.axes if ax.has_data()}
        assert len(lines) == 2 and all(len(v) == 1 for v in lines.values())
        for title, (line,) in lines.items():
            expected = 88.9 if "ResNet18" in title else 30.0
            assert np.allclose(line.get_ydata(), expected)
            assert max(line.get_xdata()) < 0.5  # over the accuracy bars only
        assert "majority class (accuracy floor)" in [x.get_text() for leg in fig.legends for x in leg.get_texts()]


# ---------------------------------------------------------------------------- 8. nothing dropped silently


def test_a_diverged_run_is_counted_and_marked_and_not_averaged(tmp_path):
    t = tables(seeds=(0, 1))
    diverge(t)
    fig = plots.training_time(t["runs"], tmp_path)["uniform"]
    assert "left out of the means: 1 diverged (set uniform vgg16 s0)" in _title(fig)
    vgg = next(ax for ax in fig.axes if ax.get_title().startswith("digits / VGG16"))
    assert "✕ 1 diverged" in " ".join(x.get_text() for x in vgg.texts)
    assert 999.0 not in {round(p.get_height(), 3) for p in vgg.patches}  # the diverged run's time is not in a mean
    assert "diverged" not in _title(plots.training_time(t["runs"], tmp_path)["mixed"])  # only where it belongs
    assert "1 diverged" in _title(plots.test_metrics(t["runs"], tmp_path)["uniform"])
    curves = plots.training_curves(t["epochs"], tmp_path, runs=t["runs"])["uniform"]
    assert "1 diverged" in _title(curves)
    assert sum(ln.get_gid() == "left_out" for ax in curves.axes for ln in ax.get_lines()) == 1


def test_inference_figures_count_the_runs_without_a_measurement(tmp_path):
    t = tables()
    diverge(t)
    for fig in (plots.inference_latency(t["inference"], tmp_path, runs=t["runs"]),
                plots.inference_energy(t["inference"], tmp_path, runs=t["runs"]),
                plots.accuracy_latency_pareto(t["inference"], t["runs"], tmp_path)):  # fmt: skip
        assert "1 diverged (set uniform vgg16 s0)" in _title(fig)
    latency = plots.inference_latency(t["inference"], tmp_path, runs=t["runs"])
    assert any("✕ 1 diverged" in x for x in _texts(latency))
    speed = plots.speedup_vs_macs(t["inference"], tmp_path, runs=t["runs"])
    assert "1 diverged" in _title(speed)


def test_table1_says_which_runs_it_left_out():
    t = tables(datasets=("bloodmnist",), seeds=(0, 1))
    diverge(t, scenario="mixed")
    table = plots.reference_accuracy_table(t["runs"])
    row = table[(table["model"] == "VGG16") & (table["method"] == "set")].iloc[0]
    assert row["runs"].startswith("1 completed, 1 diverged")
    assert row["accuracy, final epoch (%)"] == pytest.approx(71.0)  # the completed seed only


# ---------------------------------------------------------------------------- 9. Figure 2, Tables 2-3


class FakeSplit:
    def __init__(self, counts):
        self.classes = [f"c{i}" for i in range(len(counts))]
        self.counts = counts

    def class_counts(self):
        return list(self.counts)


def test_split_table_loads_as_the_runs_do_and_dataset_table_sums_it():
    calls = []

    def load(name, **kwargs):
        calls.append((name, kwargs))
        held_out = FakeSplit([20, 5])
        return {"train": FakeSplit([80, 20]), "val": held_out, "test": held_out}

    params = {"datasets": ["visa"], "models": ["vgg16", "resnet18"], "train_subset": None, "val_subset": None,
              "test_subset": None, "model_options": {"resnet18": {"train_subset": 50}}, "data_seed": 3,
              "dataset_options": {"visa": {"split": "paper"}}, "data_root": None, "image_size": 224}  # fmt: skip
    splits = plots.split_table(params, load)
    assert [c[1]["train_subset"] for c in calls] == [None, 50]  # a model with its own budget loads its own splits
    assert calls[0][1]["split"] == "paper" and calls[0][1]["seed"] == 3 and calls[0][1]["size"] == 224
    table = plots.dataset_table(splits)
    row = table.iloc[0]
    assert (row["train images"], row["val images"], row["test images"]) == (100, 25, 25)
    assert row["val"] == "the test split itself" and row["split (train / val / test, %)"] == "80 / =test / 20"
    assert row["majority class, test (%)"] == 80.0 and row["largest / smallest class, train"] == 4.0


def test_figure2_and_tables_2_3_from_the_smoke_parameters(tmp_path):
    from helpers import config, data

    params = config.load_params(Path(__file__).resolve().parents[1] / "params" / "smoke.yaml")
    splits = plots.split_table(params, data.load_splits)
    sizes = splits.groupby("split")["images"].sum().to_dict()
    assert sizes == {"train": 48, "val": 30, "test": 30}  # the smoke profile's subsets
    assert splits["class"].nunique() == 10
    fig = plots.class_balance(splits, tmp_path)
    assert _title(fig).startswith("Figure 2 (paper)")
    assert (tmp_path / "fig02_class_balance.png").is_file()
    scenarios = plots.scenario_table(params).set_index("scenario")
    assert scenarios.loc["mixed", "conv filters removed (%)"] == 50.0
    assert scenarios.loc["linear_only", "conv (structured)"] == "none"
    assert scenarios.attrs["title"].startswith("Table 2 (paper)")
    setup = plots.configuration_table(params).set_index("setting")
    assert setup.loc["optimizer", "as the paper"] == "yes" and setup.loc["lr", "as the paper"] == "yes"
    assert setup.loc["epochs", ["this study", "paper", "as the paper"]].tolist() == ["1", "50", "no"]
    assert setup.loc["seeds", "this study"] == "1"
    assert setup.attrs["title"].startswith("Table 3 (paper)")

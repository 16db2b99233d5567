"""Tests of helpers.plots on small synthetic results tables with the columns of helpers.results.COLUMNS."""

from __future__ import annotations

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import plots  # noqa: E402
from helpers.results import COLUMNS  # noqa: E402

METHODS = ("dense", "pre_training", "in_training", "post_training", "set")
SCENARIOS = ("uniform", "mixed", "linear_only")


def make_tables(
    *, datasets=("digits",), models=("vgg16", "resnet18"), seeds=(0, 1), scenarios=SCENARIOS, epochs=2,
    energy_source="zeus-cpu-rapl",
) -> dict[str, pd.DataFrame]:
    """runs / epochs / inference tables as helpers.results writes them (dense runs carry scenario 'none')."""
    rng = np.random.default_rng(0)
    grid = [(d, m, me, sc, s) for d, m, me, sc, s in itertools.product(datasets, models, METHODS, scenarios, seeds) if me != "dense"]
    grid += [(d, m, "dense", "none", s) for d, m, s in itertools.product(datasets, models, seeds)]
    runs, epoch_rows, inference_rows = [], [], []
    for dataset, model, method, scenario, seed in grid:
        run_id = f"{dataset}-{model}-{method}-{scenario}-s{seed}-0123abcd"
        accuracy = 0.9 - 0.05 * METHODS.index(method) + 0.01 * seed
        energy = math.nan if energy_source == "unavailable" else float(rng.uniform(100, 200))
        row = {c: math.nan for c in COLUMNS["runs"]}
        row.update(run_id=run_id, dataset=dataset, model=model, method=method, scenario=scenario, seed=seed,
                   status="completed", epochs_completed=epochs, train_time_s=10.0 + seed, train_energy_j=energy,
                   train_energy_source=energy_source, peak_memory_mb=300.0, test_accuracy=accuracy,
                   test_precision=accuracy - 0.02, test_recall=accuracy - 0.01, test_f1=accuracy - 0.015)
        runs.append(row)
        for epoch, phase in itertools.product(range(1, epochs + 1), ("train", "val")):
            epoch_rows.append({**{c: math.nan for c in COLUMNS["epochs"]}, "run_id": run_id, "epoch": epoch,
                               "phase": phase, "loss": 1.0 / epoch, "accuracy": 0.5 + 0.1 * epoch,
                               "energy_source": energy_source})
        for variant in ("masked", "compacted"):
            compacted = variant == "compacted" and method != "dense"
            inference_rows.append({
                **{c: math.nan for c in COLUMNS["inference"]}, "run_id": run_id, "variant": variant, "device": "cpu",
                "threads": 2, "batch_size": 1, "samples": 20, "latency_ms_mean": 2.0 if compacted else 5.0,
                "energy_j": 0.5 if energy_source != "unavailable" else math.nan, "energy_source": energy_source,
                "macs": 3_000_000 if compacted else 12_000_000,
            })
    runs = pd.DataFrame(runs)
    ids = runs[["run_id", "dataset", "model", "method", "scenario", "seed"]]
    return {
        "runs": runs,
        "epochs": pd.DataFrame(epoch_rows).merge(ids, on="run_id"),
        "inference": pd.DataFrame(inference_rows).merge(ids, on="run_id"),
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _hex(color) -> str:
    return mcolors.to_hex(color)


def _title(fig) -> str:
    return " ".join(fig._suptitle.get_text().split())  # titles are wrapped to the figure's width


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.has_data()]


# ------------------------------------------------------------------------------------------- statistics


def test_mean_interval_is_the_student_t_interval():
    mean, low, high = plots.mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert mean == pytest.approx(2.0)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half))


def test_mean_interval_collapses_for_one_value_and_is_nan_for_none():
    assert plots.mean_interval([4.0, math.nan]) == (4.0, 4.0, 4.0)
    assert all(math.isnan(v) for v in plots.mean_interval([math.nan]))


def test_summarize_counts_finite_values_per_group():
    df = pd.DataFrame({"method": ["a", "a", "b"], "value": [1.0, 3.0, math.nan]})
    st = plots.summarize(df, "value", ["method"]).set_index("method")
    assert st.loc["a", "mean"] == 2.0 and st.loc["a", "n"] == 2
    assert math.isnan(st.loc["b", "mean"]) and st.loc["b", "n"] == 0


def test_pareto_front_marks_only_non_dominated_points():
    df = pd.DataFrame({"latency": [1.0, 2.0, 3.0, 2.5, math.nan], "accuracy": [80.0, 90.0, 95.0, 85.0, 99.0]})
    assert plots.pareto_front(df, "latency", "accuracy").tolist() == [True, True, True, False, False]


def test_with_dense_baseline_adds_dense_rows_to_every_scenario_once():
    runs = make_tables(seeds=(0,))["runs"]
    mixed = plots.with_dense_baseline(runs, "mixed")
    assert set(mixed["scenario"]) == {"mixed"}
    assert (mixed["method"] == "dense").sum() == 2  # one per model
    twice = pd.concat([runs, runs.assign(scenario="uniform").query("method == 'dense'")])
    assert (plots.with_dense_baseline(twice, "mixed")["method"] == "dense").sum() == 2
    assert plots.scenarios_of(runs) == list(SCENARIOS)


def test_with_run_ids_joins_missing_id_columns():
    tables = make_tables(seeds=(0,))
    bare = tables["epochs"][["run_id", "epoch", "phase", "accuracy"]]
    joined = plots.with_run_ids(bare, tables["runs"])
    assert {"dataset", "model", "method", "scenario", "seed"} <= set(joined.columns)
    assert len(joined) == len(bare)


def test_summary_table_puts_dense_in_its_own_column_and_shows_intervals():
    table = plots.summary_table(make_tables()["runs"], "test_accuracy", scale=100)
    assert list(table.columns) == ["none", *SCENARIOS]
    cell = table.loc[("digits", "vgg16", "dense"), "none"]
    assert cell.startswith("90.50 [")  # mean of 90 and 91 over two seeds, with its interval
    assert math.isnan(table.loc[("digits", "vgg16", "dense"), "mixed"])


def test_missing_column_error_names_the_column():
    runs = make_tables(seeds=(0,))["runs"].drop(columns=["train_time_s"])
    with pytest.raises(plots.MissingColumnsError, match="train_time_s"):
        plots.training_time(runs, "unused")


def test_method_palette_is_fixed_and_extends_for_new_methods():
    palette = plots.method_palette(["l1_norm", "set"])
    assert palette["set"] == plots.METHOD_PALETTE["set"]
    assert palette["l1_norm"] not in plots.METHOD_PALETTE.values()
    assert len(set(plots.METHOD_PALETTE.values())) == len(plots.METHOD_PALETTE)


# ---------------------------------------------------------------------------------------------- figures


def test_training_curves_one_figure_per_scenario_with_paper_numbers(tmp_path):
    figures = plots.training_curves(make_tables()["epochs"], tmp_path, metric="accuracy")
    assert list(figures) == list(SCENARIOS)
    for number, scenario in zip((3, 4, 5), SCENARIOS):
        assert (tmp_path / f"fig{number:02d}_training_accuracy_{scenario}.png").is_file()
        assert (tmp_path / f"fig{number:02d}_training_accuracy_{scenario}.svg").is_file()
        fig = figures[scenario]
        assert f"Figure {number} (paper)" in _title(fig)
        axes = _data_axes(fig)
        assert len(axes) == 2  # digits x (vgg16, resnet18), no empty panel
        for ax in axes:
            assert "(%)" in ax.get_ylabel()
            colours = {_hex(line.get_color()) for line in ax.get_lines()}
            # one line per method, in the method's colour; dense (the baseline) is in every scenario's figure
            assert colours == {plots.METHOD_PALETTE[m] for m in METHODS}
    legend_labels = [t.get_text() for t in figures["mixed"].legends[0].get_texts()]
    assert legend_labels == [plots.METHOD_LABELS[m] for m in METHODS]
    loss = plots.training_curves(make_tables()["epochs"], tmp_path, metric="loss")
    assert "Figure 7 (paper)" in _title(loss["mixed"])
    assert _data_axes(loss["mixed"])[0].get_ylabel() == "train cross-entropy loss"


def test_training_curves_show_an_interval_only_with_several_seeds(tmp_path):
    many = plots.training_curves(make_tables(seeds=(0, 1, 2)).get("epochs").assign(
        accuracy=lambda d: d["accuracy"] + 0.01 * d["seed"]), tmp_path, metric="accuracy")
    one = plots.training_curves(make_tables(seeds=(0,))["epochs"], tmp_path, metric="accuracy")
    assert any(ax.collections for ax in _data_axes(many["uniform"]))  # the 95 % band
    assert not any(ax.collections for ax in _data_axes(one["uniform"]))


def test_bar_colours_follow_the_palette_in_every_figure(tmp_path):
    tables = make_tables(seeds=(0,))
    for fig in (plots.test_metrics(tables["runs"], tmp_path)["mixed"], plots.training_time(tables["runs"], tmp_path)["mixed"]):
        colours = {_hex(p.get_facecolor()) for ax in _data_axes(fig) for p in ax.patches}
        assert colours == {plots.METHOD_PALETTE[m] for m in METHODS}
    assert (tmp_path / "fig13_test_metrics_mixed.png").is_file()
    assert (tmp_path / "fig10_training_time_mixed.svg").is_file()


def test_bars_have_error_bars_only_with_several_seeds(tmp_path):
    one = plots.training_time(make_tables(seeds=(0,))["runs"], tmp_path)["uniform"]
    two = plots.training_time(make_tables(seeds=(0, 1))["runs"], tmp_path)["uniform"]
    def errorbars(fig):
        return sum(isinstance(c, ErrorbarContainer) for ax in fig.axes for c in ax.containers)

    assert errorbars(one) == 0
    assert errorbars(two) == 2 * len(METHODS)  # every bar of both panels
    assert "95 % interval over 2 seeds" in _title(two)


def test_inference_figures(tmp_path):
    tables = make_tables(seeds=(0,))
    fig = plots.inference_latency(tables["inference"], tmp_path)
    assert "Figure 18 (paper)" in _title(fig)
    assert len(_data_axes(fig)) == 4  # 2 models x (masked, compacted)
    heights = sorted({round(p.get_height(), 6) for ax in fig.axes for p in ax.patches})
    assert heights == [2.0, 5.0]  # compacted sparse 2 ms, masked and dense 5 ms
    speed = plots.speedup_vs_macs(tables["inference"], tmp_path)
    offsets = np.concatenate([c.get_offsets() for ax in _data_axes(speed) for c in ax.collections])
    assert set(map(tuple, np.round(offsets, 6))) == {(4.0, 2.5), (1.0, 1.0)}
    pareto = plots.accuracy_latency_pareto(tables["inference"], tables["runs"], tmp_path)
    assert len(_data_axes(pareto)) == 2
    for name in ("fig18_inference_latency", "speedup_vs_macs", "accuracy_latency_pareto"):
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.svg").is_file()


def test_reference_table_lists_published_values_with_sources():
    runs = make_tables(datasets=("bloodmnist",), seeds=(0,))["runs"]
    table = plots.reference_accuracy_table(runs)
    dense = table[table["method"] == "dense"]
    assert dense["published (%)"].tolist() == [94.85, 91.93, 95.8]
    assert dense["published source"].str.contains("Doerrich").tolist() == [True, True, False]
    assert dense["published source"].str.contains("MedMNIST v2").iloc[2]
    assert dense["accuracy, final epoch (%)"].iloc[0] == 90.0
    assert set(table.loc[table["method"] != "dense", "method"]) == {"pre_training", "in_training", "post_training", "set"}
    absent = plots.reference_accuracy_table(make_tables(datasets=("digits",), seeds=(0,))["runs"])
    assert absent["accuracy, final epoch (%)"].isna().all()


def test_energy_not_measured_draws_nothing_and_says_so(tmp_path):
    tables = make_tables(seeds=(0,), energy_source="unavailable")
    assert plots.training_energy(tables["runs"], tmp_path) == {}
    assert plots.inference_energy(tables["inference"], tmp_path) is None
    assert not list(tmp_path.iterdir())
    text = plots.energy_statement(tables["runs"], "train_energy_j", "train_energy_source", "training energy")
    assert text.startswith("No training energy was measured on this machine: source = unavailable")


def test_energy_bars_are_hatched_by_source_and_missing_values_are_not_zero(tmp_path):
    runs = make_tables(seeds=(0,))["runs"]
    runs.loc[runs["method"] == "set", ["train_energy_j", "train_energy_source"]] = [math.nan, "unavailable"]
    runs.loc[runs["method"] == "dense", "train_energy_source"] = "estimate-codecarbon-cpu"
    fig = plots.training_energy(runs, tmp_path)["mixed"]
    assert "Figure 16 (paper)" in _title(fig)
    patches = [p for ax in _data_axes(fig) for p in ax.patches]
    assert all(p.get_height() > 0 for p in patches)
    by_colour = {_hex(p.get_facecolor()): p.get_hatch() for p in patches}
    assert by_colour[plots.METHOD_PALETTE["dense"]] == "xx"  # estimate
    assert by_colour[plots.METHOD_PALETTE["pre_training"]] == "///"  # zeus-cpu-rapl
    assert plots.METHOD_PALETTE["set"] not in by_colour  # not measured: no bar ...
    assert sum(t.get_text() == "n/a" for ax in fig.axes for t in ax.texts) == 2  # ... but an n/a mark per panel
    legend_texts = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert {"zeus-cpu-rapl", "estimate-codecarbon-cpu", "n/a = not measured"} <= legend_texts
    statement = plots.energy_statement(runs, "train_energy_j", "train_energy_source", "training energy")
    assert "not measured (shown as n/a)" in statement
    assert plots.inference_energy(make_tables(seeds=(0,))["inference"], tmp_path) is not None
    assert (tmp_path / "fig19_inference_energy.png").is_file()


def test_figures_leave_interactive_mode_as_the_backend_set_it(tmp_path):
    """Jupyter's inline backend switches interactive mode on when a kernel's first figure is created; a figure
    function must not switch it back off (every later figure of the notebook would then stay hidden)."""
    before = matplotlib.is_interactive()
    try:
        matplotlib.interactive(False)
        with plots.style._theme():
            matplotlib.interactive(True)  # what the inline backend does on the first figure
        assert matplotlib.is_interactive()
    finally:
        matplotlib.interactive(before)


def test_saved_svg_is_identical_between_reruns(tmp_path):
    runs = make_tables(seeds=(0,))["runs"]
    plots.training_time(runs, tmp_path / "a")
    plots.training_time(runs, tmp_path / "b")
    name = "fig09_training_time_uniform.svg"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_compaction_table_pairs_masked_and_compacted_per_run():
    inference = make_tables(seeds=(0, 1))["inference"]
    per_run = plots.compaction_table(inference)
    assert len(per_run) == inference["run_id"].nunique()
    sparse = per_run[per_run["method"] != "dense"]
    assert (sparse["speedup"] == 2.5).all() and (sparse["macs_ratio"] == 4.0).all()
    dense = per_run[per_run["method"] == "dense"]
    assert (dense["speedup"] == 1.0).all() and set(dense["scenario"]) == {"none"}
    means = plots.compaction_table(inference, mean_over_seeds=True)
    assert len(means) == len(per_run) // 2  # one row per dataset x model x method x scenario present
    with pytest.raises(ValueError, match="compacted"):
        plots.compaction_table(inference[inference["variant"] == "masked"])


def test_summary_table_keeps_unmeasured_rows_as_nan():
    runs = make_tables(seeds=(0,), energy_source="unavailable")["runs"]
    table = plots.summary_table(runs, "train_energy_j")
    assert len(table) == 2 * len(METHODS) and table.isna().all().all()

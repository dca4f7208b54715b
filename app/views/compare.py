"""Compare: quality against sparsity (or measured speed, or parameter count) for one model at a time (or one
panel per model), with Pareto fronts, each model's dense baseline, mean and spread over seeds; the settings
of a sweep against its metric."""

from __future__ import annotations

import shlex

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from workbench_app.specs import numeric_fields, setting_fields, varying
from workbench_app.ui import (
    choose,
    number_columns,
    open_in_runs,
    page_start,
    selected_runs,
    selection,
    show_figure,
    store_option,
    view_switch,
)

from workbench.figures import metric_title, quality_figure
from workbench.results import (
    SEED_FIELDS,
    better,
    dense_baselines,
    job_label,
    quality_metrics,
    relative_name,
    relative_to_dense,
    seed_summary,
    setting_keys,
)

SUMMARY_FIELDS = ["method", "model", "pattern", "allocation", "target_sparsity", "data", "kind"]
MAX_MATRIX_POINTS = 1000  # a scatter matrix of more points is a blur; a seeded sample keeps the picture
MAX_MATRIX_FIELDS = 6  # beyond this many panels a side, a scatter matrix is unreadable: the user picks
MAX_COMMANDS = 3  # latency commands shown for runs without a measured speed
GROUP = "model_data"  # the column naming each run's model and data: what a front and a dense baseline belong to
X_TITLES = {"achieved_sparsity": "achieved sparsity (fraction of zeros measured)",
            "target_sparsity": "target sparsity (fraction of zeros asked for)",
            "parameters": "parameters (after structured pruning)", "speedup": "speedup over dense"}


def measured_speedups(runs: pd.DataFrame, rows: pd.DataFrame) -> list[float | None]:
    """Each run's speedup over dense: the median of the latency rows timed with its own masks
    (``source_run``), else of the kernel cases at its pattern and sparsity; 1 for the dense run itself."""
    own = rows.groupby("source_run")["speedup"].median().to_dict() if "source_run" in rows else {}
    by_case = rows.groupby([rows["pattern"].astype(str), rows["sparsity"].round(3)])["speedup"].median().to_dict()
    out = []
    for run_id, method, pattern, target in zip(runs["run_id"], runs["method"], runs["pattern"],
                                               runs["target_sparsity"].fillna(0.0)):
        if method == "dense":
            out.append(1.0)
        else:
            out.append(own.get(run_id, by_case.get((str(pattern), round(float(target), 3)))))
    return out


def group_names(frame: pd.DataFrame) -> pd.Series:
    """``model · data`` of each run (what its quality is measured on)."""
    return frame["model"].fillna(frame["kind"]).astype(str) + " · " + frame["data"].fillna("—").astype(str)


def summarised(frame: pd.DataFrame, settings: list[str], values: list[str], by_seed: bool) -> pd.DataFrame:
    """Runs averaged over seeds (``results.seed_summary``: mean, ``_std``, ``seeds``, ``run_ids``), labelled by
    their setting; or each run on its own (``seeds`` 1, no spread, ``run_ids`` its own)."""
    if not by_seed:
        return frame.assign(seeds=1, run_ids=[[run_id] for run_id in frame["run_id"]],
                            **{f"{v}_std": float("nan") for v in values})
    summary = seed_summary(frame, settings, values)
    labels = []
    for row, label in zip(summary.itertuples(index=False), summary["label"]):
        if row.seeds > 1:
            what = job_label(row.method, row.kind, row.target_sparsity, row.pattern, row.allocation,
                             getattr(row, "name", None))
            labels.append(f"{what} · {row.model} · mean of {row.seeds} seeds")
        else:
            labels.append(label)
    return summary.assign(label=labels)


reader, runs = page_start("Compare")
finished = runs[runs["status"] == "finished"]
quality_columns = quality_metrics(finished.columns)  # perplexity, embedding fidelity, accuracy, task scores
rated = finished[finished[quality_columns].notna().any(axis=1)] if quality_columns else finished.iloc[0:0]
if rated.empty:
    st.info("No finished run has a quality metric (perplexity, embedding fidelity or accuracy) yet. "
            "Run `workbench demo`, or start a prune job on the **Launch** page.", icon=":material/inbox:")
    st.stop()

specs = reader.specs()
spec_only = specs[[c for c in specs.columns if c not in rated.columns and c.split(".")[0] not in rated.columns]]
table = rated.join(spec_only, on="run_id")
for column in ("model", "data"):  # rows written without a summary column still name it in their spec
    if column in specs:
        table[column] = table[column].fillna(table["run_id"].map(specs[column]))
table[GROUP] = group_names(table)
counts = table[GROUP].value_counts()  # most runs first: the default is the model compared most

groups = list(counts.index)
st.session_state["compare_models"] = [g for g in st.session_state.get("compare_models", []) if g in groups] or groups[:1]
chosen_groups = st.multiselect(
    "Model · data", groups, key="compare_models", format_func=lambda g: f"{g} ({counts[g]:,} runs)",
    persist_state="session",
    help="quality is comparable between runs of one model on one dataset; several models draw one panel each, "
         "each with its own Pareto front and dense baseline")
if not chosen_groups:
    st.info("Pick a model above.")
    st.stop()
table = table[table[GROUP].isin(chosen_groups)]
metrics = [m for m in quality_columns if table[m].notna().any()]
x_options = ["achieved_sparsity", "target_sparsity"] + (["parameters"] if "parameters" in table
                                                         and table["parameters"].notna().any() else [])
fields = SUMMARY_FIELDS + [c for c in spec_only.columns if table[c].notna().any()]
seed_fields = [f for f in SEED_FIELDS if f in table]
settings = [f for f in setting_fields(list(spec_only.columns), tuple(seed_fields)) if f in table]

controls = st.columns(5)
with controls[0]:
    metric = choose("Quality", metrics, key="compare_metric", persist_state="session",
                    help="what the runs of these models measured: perplexity, embedding fidelity, accuracy, or a "
                         "downstream task's score (`<task>/acc`, from the spec's `evaluation.tasks`); the Pareto "
                         "front keeps the runs no other beats, higher or lower being better as the metric says")
with controls[1]:
    x_axis = choose("x axis", x_options, key="compare_x", persist_state="session",
                    help="achieved: zeros measured on the pruned weights; target: what the spec asked for; "
                         "parameters: the model's size after structured pruning (fewer is better)")
with controls[2]:
    color = choose("Colour by", fields, key="compare_color", default="method", persist_state="session")
with controls[3]:
    symbol = choose("Symbol by", ["(none)"] + fields, key="compare_symbol", default="pattern", persist_state="session")
with controls[4]:
    fronts = choose("Pareto front", ["all runs", "each colour group", "off"], key="compare_fronts",
                    persist_state="session")
symbol = None if symbol == "(none)" else symbol
has_repeats = bool(setting_keys(table, [GROUP, *settings]).duplicated().any())
baselines = {key[0]: value for key, value in dense_baselines(table, metric, by=[GROUP]).items()}
toggles = st.columns(4)
by_seed = toggles[0].toggle("Mean over seeds", value=True, key="compare_by_seed", disabled=not has_repeats,
                            help="runs that differ only in their seed (" + (", ".join(seed_fields) or "calibration.seed")
                                 + ") as one point: the mean, with the standard deviation as error bars")
relative = toggles[1].toggle("Relative to dense", key="compare_relative", disabled=not baselines,
                             help=f"{metric} divided by the dense run's {metric} of the same model and data"
                                  + ("" if baselines else " (no dense run among these)"))
log_y = toggles[2].toggle("Log scale", value=metric == "perplexity", key=f"compare_log_{metric}")
only_selected = toggles[3].toggle("Only the selected runs", key="compare_only_selected", persist_state="session",
                                  disabled=not selection(), help="select runs on the Runs page")

y = metric
if relative and baselines:
    y = relative_name(metric)
    table = table.assign(**{y: relative_to_dense(table, metric, by=[GROUP])})
    baselines = dict.fromkeys(baselines, 1.0)
if only_selected and selection():
    table = table[table["run_id"].isin(selection())]
data = table[table[y].notna() & table[x_axis].notna()]
unplotted = int((table[metric].notna() & table[x_axis].isna()).sum())
VIEWS = ["Against sparsity", "Against measured speed", "Scatter matrix of the spec's numeric fields",
         "Sweep settings (parallel coordinates)"]
view = view_switch(VIEWS, "compare_view")
shown_models = ", ".join(f"`{g}`" for g in chosen_groups)
st.caption(f"{len(data):,} finished runs of {shown_models} with {metric}"
           + (f"; {unplotted:,} more have no {x_axis}" if unplotted and view == VIEWS[0] else "")
           + f"; {int((runs['status'] != 'finished').sum()):,} unfinished or failed runs are left out.")


def figure_options(x: str, frame: pd.DataFrame) -> dict:
    return dict(facet=GROUP, baselines=baselines, color=color, symbol=symbol, fronts=fronts, log_y=log_y,
                x_title=X_TITLES.get(x, x.replace("_", " ")), height=520 if len(chosen_groups) == 1 else 380,
                error_y=f"{y}_std", error_x=f"{x}_std" if x == "speedup" else None, ids="run_ids")


def sweep_table(summary: pd.DataFrame, x: str) -> None:
    """The settings that vary as columns; per setting the number of seeds, mean and spread of the metric."""
    columns = [GROUP] if len(chosen_groups) > 1 else []
    columns += [f for f in varying(summary, settings) if f not in columns]
    shown = summary[columns + ["seeds", y, f"{y}_std", x]].rename(
        columns={y: f"{y} mean", f"{y}_std": f"{y} std", x: f"{x} mean" if by_seed else x})
    shown = shown.sort_values([c for c in columns if c != GROUP][:3] or ["seeds"], kind="stable")
    st.markdown(f"**Settings compared**: what varies between these runs, with {y} "
                + ("averaged over seeds" if by_seed else "per run") + f" ({better(y)} is better).")
    st.dataframe(shown, hide_index=True, key="compare_sweep", column_config=number_columns(shown))


def against_sparsity() -> None:
    summary = summarised(data, [GROUP, *settings], [y, x_axis], by_seed)
    event = show_figure(quality_figure(summary, x_axis, y, **figure_options(x_axis, summary)), key="compare_quality",
                        select=True)
    chosen = selected_runs(event)
    if chosen:
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.caption(f"**{len(chosen):,} runs selected** on the chart (a point that is a mean over seeds selects "
                     "each of its runs; double-click the chart to clear).")
        if right.button("Open in Runs", key="compare_open_runs", icon=":material/table_rows:",
                        help="make them the selection and show them on the Runs page"):
            open_in_runs(chosen)
    else:
        st.caption("Click a point, or draw a box or lasso around several (the chart's toolbar), to select their runs.")
    sweep_table(summary, x_axis)


def latency_command(run: pd.Series) -> str:
    return (f"workbench bench latency --model {shlex.quote(str(run['model']))} --masks-run {run['run_id']}"
            f"{store_option(reader)}")


def unmeasured(missing: pd.DataFrame, total: int, why: str) -> None:
    """Say how many runs have no measured speed, why, and how to measure them."""
    if missing.empty:
        return
    structured = missing["pattern"].astype(str).str.startswith("structured:")
    timeable = missing[~structured]
    st.warning(f"**{len(missing):,} of {total:,} runs are not drawn**: {why}."
               + (" Time the model a run pruned (prefill and decode, dense against sparse) with:"
                  if not timeable.empty else ""), icon=":material/timer_off:")
    if not timeable.empty:
        st.code("\n".join(latency_command(run) for _, run in timeable.head(MAX_COMMANDS).iterrows()), language="bash")
    if structured.any():
        st.caption(f"{int(structured.sum()):,} of them are structured runs (a smaller dense model, not sparse "
                   "weights): compare those by parameter count, the **parameters** x axis.")
    with st.expander(f"The {len(missing):,} runs without a measured speed"):
        st.dataframe(missing[["run_id", "label", "pattern", "target_sparsity"]], hide_index=True,
                     key="compare_unmeasured")


def against_speed() -> None:
    """Quality against the speedup measured for each run's model or for kernels of its pattern."""
    kernels = reader.kernel_results()
    if "speedup" in kernels and not kernels.empty:
        kernels = kernels[kernels["speedup"].notna()]
        phase = kernels["phase"].fillna("kernel") if "phase" in kernels else pd.Series("kernel", index=kernels.index)
        by_run = kernels[phase.isin(["prefill", "decode"]) & kernels["source_run"].isin(set(data["run_id"]))] \
            if "source_run" in kernels else kernels.iloc[0:0]
        cases = kernels[phase == "kernel"]
    else:
        by_run = cases = kernels.iloc[0:0]
    sources = {}
    if not by_run.empty:
        sources["the model pruned by each run (latency benchmark)"] = by_run
    if not cases.empty:
        sources["kernel cases at each run's pattern and sparsity"] = cases
    if "speedup" in data and data["speedup"].notna().any():
        sources["each run's own speedup metric"] = None
    speed, why = data.assign(speedup=float("nan")), "no latency benchmark or kernel case has been measured yet"
    if sources:
        source = choose("Speed from", list(sources), key="compare_speed_source", persist_state="session")
        rows = sources[source]
        if rows is not None:
            pick = st.columns(5)
            with pick[0]:
                backend = choose("Backend", sorted(rows["backend"].dropna().unique()), key="compare_backend",
                                 persist_state="session")
            with pick[1]:
                dtype = choose("Dtype", sorted(rows["dtype"].dropna().unique()), key="compare_dtype",
                               persist_state="session")
            with pick[4]:
                timing = choose("Timing", sorted(rows["timing"].dropna().astype(str).unique()), key="compare_timing",
                                default="graph", persist_state="session")
            rows = rows[(rows["backend"] == backend) & (rows["dtype"] == dtype) & (rows["timing"].astype(str) == timing)]
            if source.startswith("kernel cases"):
                size_column = "tokens"
            else:
                with pick[2]:
                    chosen_phase = choose("Phase", sorted(rows["phase"].dropna().unique()), key="compare_phase",
                                          persist_state="session")
                rows = rows[rows["phase"] == chosen_phase]
                size_column = "batch" if chosen_phase == "decode" else "tokens"
            with pick[3]:
                size = choose(size_column.capitalize(), sorted(int(t) for t in rows[size_column].dropna().unique()),
                              key=f"compare_{size_column}", persist_state="session")
            rows = rows[rows[size_column] == size]
            speed = data.assign(speedup=measured_speedups(data, rows))
            setting = f"{backend}, {dtype}, {timing}, {size_column} = {size}"
            st.caption(f"Median measured speedup over dense on {setting} (the dense run is the baseline: 1).")
            why = (f"no latency benchmark of the model they pruned and no kernel case at their pattern and sparsity "
                   f"on {setting}" if source.startswith("kernel") else
                   f"no latency benchmark of the model they pruned on {setting}")
        else:
            speed, why = data, "they record no `speedup` metric"
    speed = speed.assign(speedup=pd.to_numeric(speed["speedup"], errors="coerce"))
    timed = speed[speed["speedup"].notna()]
    unmeasured(speed[speed["speedup"].isna()], len(speed), why)
    sized = int(data["parameters"].notna().sum()) if "parameters" in data else 0
    if sized and x_axis != "parameters":
        st.caption(f"{sized:,} of these runs record their parameter count (structured runs remove whole heads, "
                   "channels or blocks): choose **parameters** as the x axis for quality against model size.")
    if timed.empty:
        st.info("No latency measured for these runs yet: kernel benchmark rows (job kind `bench`), a latency "
                "benchmark of a pruned run's model, or runs that record a `speedup` metric fill this chart.",
                icon=":material/timer:")
        return
    summary = summarised(timed, [GROUP, *settings], [y, "speedup"], by_seed)
    show_figure(quality_figure(summary, "speedup", y, **figure_options("speedup", summary)), key="compare_speed")


def scatter_matrix() -> None:
    """The numeric spec fields that vary among the plotted runs, against each other and the quality metric."""
    candidates = [f for f in numeric_fields(data[[c for c in data.columns if c in fields]]) if f not in ("kind", "sparsity")]
    if len(candidates) > MAX_MATRIX_FIELDS:
        candidates = st.multiselect("Fields", candidates, default=candidates[:MAX_MATRIX_FIELDS - 2],
                                    key="compare_matrix_fields", help="the numeric spec fields that vary among these runs")
    dimensions = list(dict.fromkeys(candidates + [x_axis, y]))
    if len(dimensions) < 3:
        st.info("These runs differ in fewer than two numeric spec fields; a sweep over e.g. `sparsity` and "
                "`calibration.samples` fills this matrix.", icon=":material/numbers:")
        return
    sample = data.sample(MAX_MATRIX_POINTS, random_state=0) if len(data) > MAX_MATRIX_POINTS else data
    if len(sample) < len(data):
        st.caption(f"A seeded sample of {len(sample):,} of {len(data):,} runs.")
    matrix = px.scatter_matrix(sample, dimensions=dimensions, color=sample[color].astype(str), hover_name="label",
                               labels={"color": color}, height=170 * len(dimensions) + 120)
    matrix.update_traces(diagonal_visible=False, marker=dict(size=5))
    show_figure(matrix, key="compare_matrix")


def parallel_settings() -> None:
    """Each setting of the sweep as one line across its varying fields, ending at its metric."""
    summary = summarised(data, [GROUP, *settings], [y, x_axis], by_seed)
    axes = varying(summary, [GROUP, *settings, x_axis])
    if not axes:
        st.info("These runs share every setting: a sweep (Launch page, or `workbench sweep`) varies some.",
                icon=":material/tune:")
        return
    dimensions = []
    for field in axes:
        values = summary[field]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            dimensions.append(dict(label=field, values=numeric.to_numpy()))
        else:
            names = sorted(values.astype(str).unique())
            codes = values.astype(str).map({n: i for i, n in enumerate(names)})
            dimensions.append(dict(label=field, values=codes.to_numpy(), tickvals=list(range(len(names))),
                                   ticktext=names))
    quality = summary[y].to_numpy(dtype=float)
    dimensions.append(dict(label=metric_title(y), values=quality))
    lower = better(y) == "lower"
    figure = go.Figure(go.Parcoords(
        dimensions=dimensions,  # Viridis runs dark to bright: the better end dark either way
        line=dict(color=quality, colorscale="Viridis", reversescale=not lower, showscale=True,
                  colorbar=dict(title=dict(text=y)))))
    figure.update_layout(height=480, title=dict(text=f"the settings of each {'setting (mean over seeds)' if by_seed else 'run'}"
                                                     f" against {y}: drag along an axis to keep a range"))
    show_figure(figure, key="compare_parallel")
    st.caption(f"{len(summary):,} lines; the colour is {y}, darker is better.")


{VIEWS[0]: against_sparsity, VIEWS[1]: against_speed, VIEWS[2]: scatter_matrix, VIEWS[3]: parallel_settings}[view]()

"""Launch: build a spec or a sweep, validate it as the CLI does, run it in the background, watch it land."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from workbench_app import forms, launcher, live
from workbench_app.access import ALLOW_ENV, allowed
from workbench_app.data import Reader
from workbench_app.specs import flatten
from workbench_app.ui import number_columns

from workbench.data import CORPORA
from workbench.errors import SpecError, WorkbenchError
from workbench.models import BUILTINS
from workbench.spec import Calibration, Evaluation, PruneSpec
from workbench.suite import SUITE

EXAMPLE = """# a spec (any job kind) or a sweep: base / grid / include
base: {model: tiny-llama, data: shakespeare, calibration: {samples: 8, seq_len: 64}, evaluation: {windows: 8, seq_len: 64}}
grid: {method: [magnitude, random], sparsity: [0.5, 0.7]}
include: [{method: dense}]
"""
STATUS_ICON = {"running": ":material/hourglass_top:", "finished": ":material/check_circle:",
               "failed": ":material/error:", "stopped": ":material/stop_circle:"}
PACE_RUNS = 50  # the time estimate goes by this many of the newest finished runs of the model (today's pace)
NOT_PATHS = set(BUILTINS) | set(CORPORA)  # names a spec's model or data take that are never files here
ROW_COLUMNS = ["run_id", "status", "model", "method", "pattern", "target_sparsity", "achieved_sparsity",
               "perplexity", "embedding_cosine", "accuracy", "wall_s", "error"]


def suite_values(field: str) -> list[str]:
    """Values a field takes in the default suite's prune sweeps (the methods and allocations it compares)."""
    values = []
    for sweep in (s for s in SUITE if s["base"].get("kind", "prune") == "prune"):
        values += [sweep["base"].get(field)] + list(sweep.get("grid", {}).get(field, []))
        values += [entry.get(field) for entry in sweep.get("include", [])]
    return [str(v) for v in values if v is not None]


def options(*groups: list[str]) -> list[str]:
    return list(dict.fromkeys(v for group in groups for v in group if v))


def launch_rows(runs: pd.DataFrame, spec_texts: pd.DataFrame, launch: launcher.Launch) -> pd.DataFrame:
    """The store's runs of a launch's jobs (matched on their canonical spec), newest first."""
    ids = spec_texts.loc[spec_texts["spec"].isin(launch.specs), "run_id"]
    return runs[runs["run_id"].isin(set(ids))]


def recent_pace(model: str) -> tuple[float, int] | None:
    """Seconds per token of the newest finished prune runs of ``model`` (``forms.seconds_per_token``); only
    their specs are read, not every run's."""
    if runs.empty:
        return None
    recent = runs[(runs["status"] == "finished") & (runs["kind"] == "prune") & (runs["model"] == model)
                  & runs["wall_s"].notna()].head(PACE_RUNS)
    if recent.empty:
        return None
    specs = reader.raw_specs(list(recent["run_id"]))
    flat = pd.DataFrame.from_dict({run_id: flatten(spec) for run_id, spec in specs.items()}, orient="index")
    return forms.seconds_per_token(recent, flat, model)


def start(sweep: dict, title: str) -> None:
    """Validate exactly as `workbench sweep` does, and against the folders this app may read; every problem
    is a message on the page, else the launch starts in the background."""
    try:
        specs = forms.expand(sweep)
        problems = allowed().spec_problems(sweep, NOT_PATHS)
        for spec in specs:
            problems += [p for p in allowed().spec_problems(spec.model_dump(mode="json"), NOT_PATHS) if p not in problems]
        if problems:
            raise SpecError("; ".join(problems[:3]), "copy what the job reads into an allowed folder, or restart "
                            f"the app with {ALLOW_ENV} naming its folder")
        launch = launcher.start(sweep, [spec.canonical_json() for spec in specs], reader.location, title)
    except WorkbenchError as err:
        st.error(f"**{err.problem}.** Fix: {err.fix}.", icon=":material/error:")
        return
    except OSError as err:
        st.error(f"**The launch could not be written or started** ({err.strerror or type(err).__name__}). Fix: check "
                 "that the store's folder is writable.", icon=":material/error:")
        return
    except Exception as err:  # noqa: BLE001 - whatever a pasted spec provokes is a message, never a traceback
        st.error(f"**This spec could not be read** ({type(err).__name__}). Fix: compare it with the example and "
                 "README, Job specs.", icon=":material/error:")
        return
    st.success(f"Started {len(specs)} job{'s' * (len(specs) != 1)} in the background ({launch.id}).",
               icon=":material/rocket_launch:")


st.title("Launch")
reader = Reader()
runs = reader.runs()
stored = {c: sorted(runs[c].dropna().astype(str).unique()) if c in runs else [] for c in ("model", "data", "method",
                                                                                          "allocation")}
mode = st.segmented_control("Build", ["One job", "Sweep", "YAML"], default="One job", key="launch_mode",
                            persist_state="session") or "One job"

if mode == "YAML":
    with st.form("launch_yaml"):
        text = st.text_area("Spec or sweep (YAML)", EXAMPLE, height=220, key="launch_yaml_text")
        submitted = st.form_submit_button("Validate and start", type="primary")
    if submitted:
        try:
            sweep = forms.from_yaml(text)
        except SpecError as err:
            st.error(f"**{err.problem}.** Fix: {err.fix}.", icon=":material/error:")
        else:
            start(sweep, "YAML: " + ", ".join(f"{k}" for k in sweep))
else:
    defaults = PruneSpec.model_fields
    # no form: every change reruns the page (a few ms here), so the estimate below follows the values as typed
    with st.container(border=True):
        top = st.columns(3)
        model = top[0].selectbox("Model", options([defaults["model"].default], list(BUILTINS), stored["model"]),
                                 accept_new_options=True, key="launch_model",
                                 help=defaults["model"].description)
        data = top[1].selectbox("Data", options([defaults["data"].default], list(CORPORA), stored["data"]),
                                accept_new_options=True, key="launch_data", help=defaults["data"].description)
        allocation = top[2].selectbox("Allocation", options(["uniform"], suite_values("allocation"),
                                                            stored["allocation"]),
                                      accept_new_options=True, key="launch_allocation",
                                      help=defaults["allocation"].description)
        methods = options(suite_values("method"), stored["method"])
        middle = st.columns(3)
        if mode == "One job":
            method = middle[0].selectbox("Method", methods, index=methods.index("magnitude") if "magnitude" in methods else 0,
                                         accept_new_options=True, key="launch_method",
                                         help=defaults["method"].description)
            sparsity = middle[1].number_input("Sparsity", 0.0, 0.99, 0.5, 0.05, key="launch_sparsity",
                                              help=defaults["sparsity"].description)
            pattern = middle[2].text_input("Pattern", "unstructured", key="launch_pattern",
                                           help="unstructured, or N:M (N kept of every M inputs), e.g. 2:4")
        else:
            chosen_methods = middle[0].multiselect("Methods", methods, default=[m for m in ("magnitude",) if m in methods],
                                                   accept_new_options=True, key="launch_methods")
            sparsity_text = middle[1].text_input("Sparsities", "0.5, 0.7", key="launch_sparsities")
            pattern_text = middle[2].text_input("Patterns", "unstructured", key="launch_patterns",
                                                help="e.g. unstructured, 2:4, 4:8 (an N:M pattern fixes its sparsity)")
        calibration, evaluation = Calibration(), Evaluation()
        bottom = st.columns(6)
        samples = bottom[0].number_input("Calibration windows", 1, 100_000, calibration.samples, key="launch_cal_samples")
        cal_len = bottom[1].number_input("Calibration tokens", 8, 131_072, calibration.seq_len, key="launch_cal_len")
        if mode == "One job":
            seed = bottom[2].number_input("Seed", 0, 2**31 - 1, calibration.seed, key="launch_seed")
        else:
            seed_text = bottom[2].text_input("Seeds", str(calibration.seed), key="launch_seeds")
        windows = bottom[3].number_input("Evaluation windows", 1, 100_000, evaluation.windows, key="launch_eval_windows")
        eval_len = bottom[4].number_input("Evaluation tokens", 8, 131_072, evaluation.seq_len, key="launch_eval_len")
        name = bottom[5].text_input("Name (label)", "", key="launch_name")
        if mode == "One job":
            jobs = 1
        else:
            try:
                jobs = len(forms.build_sweep({}, chosen_methods, forms.split_list(pattern_text),
                                             forms.numbers(sparsity_text, "sparsities"),
                                             forms.numbers(seed_text, "seeds", integer=True))["include"])
            except SpecError:
                jobs = 1
        pace = recent_pace(str(model))
        estimate = forms.estimate_line(str(model), jobs, int(samples), int(cal_len), int(windows), int(eval_len), pace)
        st.caption(estimate)
        submitted = st.button("Validate and start", type="primary", key="launch_submit")
    if submitted:
        common = {"kind": "prune", "model": model, "data": data, "allocation": allocation,
                  "calibration": {"samples": int(samples), "seq_len": int(cal_len)},
                  "evaluation": {"windows": int(windows), "seq_len": int(eval_len)}}
        if name.strip():
            common["name"] = name.strip()
        try:
            if mode == "One job":
                spec = {**common, "method": method, "pattern": pattern.strip(),
                        "calibration": {**common["calibration"], "seed": int(seed)}}
                if not forms.is_nm(pattern):
                    spec["sparsity"] = float(sparsity)
                sweep, title = {"base": spec}, f"{method} {pattern} on {model}"
            else:
                sweep = forms.build_sweep(common, chosen_methods, forms.split_list(pattern_text),
                                          forms.numbers(sparsity_text, "sparsities"),
                                          forms.numbers(seed_text, "seeds", integer=True))
                title = f"sweep of {', '.join(chosen_methods)} on {model}"
        except SpecError as err:
            st.error(f"**{err.problem}.** Fix: {err.fix}.", icon=":material/error:")
        else:
            start(sweep, title)

st.subheader("Launched from here")
launches = launcher.list_launches(reader.location)
running = any(launch.status == "running" for launch in launches)


@st.fragment(run_every=2.0 if running else None)
def launches_panel() -> None:
    now = Reader(reader.location)
    if not launches:
        st.caption("Nothing launched yet. Jobs started here run as `workbench sweep` processes; their rows "
                   "appear below and on every page when they finish.")
        return
    fresh_runs = now.runs() if now.exists else runs
    texts = now.spec_texts() if now.exists else pd.DataFrame(columns=["run_id", "spec"])
    jobs = live.progress_files(now.location)
    for launch in launcher.list_launches(now.location):
        status = launch.status
        with st.container(border=True, key=f"launch_{launch.id}"):
            head = st.columns([6, 1])
            head[0].markdown(f"{STATUS_ICON[status]} **{launch.title}** · {status} · {launch.elapsed_s():.0f} s · "
                             f"`{launch.id}`")
            if status == "running" and head[1].button("Stop", key=f"stop_{launch.id}"):
                refused = launcher.stop(launch)
                if refused:
                    st.error(f"**Not stopped**: {refused}.", icon=":material/block:")
                else:
                    st.rerun()
            progress = launch.progress()
            st.progress(progress.fraction, text=progress.summary())
            rows = launch_rows(fresh_runs, texts, launch)
            if status == "running":  # the running job's own bars, from its progress file
                for run_id in rows.loc[rows["status"] == "running", "run_id"]:
                    live.show_bars(jobs.get(run_id))
            if not rows.empty:
                shown = rows[[c for c in ROW_COLUMNS if c in rows and (c == "run_id" or rows[c].notna().any())]]
                st.dataframe(shown, hide_index=True, column_config=number_columns(shown), key=f"rows_{launch.id}")
            log = launch.log().splitlines()
            for line in log:  # a failed job, an error of the command, a run that missed its target sparsity
                if line.startswith(("failed: ", "error: ")):
                    st.error(line.removeprefix("failed: "))
                elif line.startswith("warning: "):
                    st.warning(line.removeprefix("warning: "))
            with st.expander("Sweep file and log"):
                st.code(launcher.read_text(launch.folder / "sweep.yaml"), language="yaml")
                st.code(launch.log()[-3000:] or "(no output yet)")


launches_panel()

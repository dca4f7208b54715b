"""Reading what an AppTest run rendered: plotly figures by key, notices, tables."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest


def _decoded(value: Any) -> Any:
    """Plotly writes numeric arrays as typed base64 blocks ({dtype, bdata, shape}); make them lists again."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if "shape" in value:
                array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
            return array.tolist()
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def figures(at: AppTest) -> dict[str, dict]:
    """Every plotly chart of the run as its figure JSON (arrays decoded), by widget key."""
    return {chart.proto.id.rsplit("-", 1)[-1]: _decoded(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")}


def notices(at: AppTest) -> str:
    """The text of every info, warning and error box, joined (what a user reads as the page's state)."""
    return "\n".join(str(box.value) for kind in (at.info, at.warning, at.error) for box in kind)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def table(at: AppTest, having: str):
    """The first table with a column (or index entry) named ``having``."""
    for frame in at.dataframe:
        value = frame.value
        if having in value.columns or having in value.index or having == value.index.name:
            return value
    raise AssertionError(f"no table with {having!r}; tables: {[list(f.value.columns) for f in at.dataframe]}")


def trace_names(figure: dict) -> list[str]:
    return [trace.get("name") for trace in figure["data"]]

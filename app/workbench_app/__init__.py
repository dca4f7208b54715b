"""Helpers of the Streamlit app: store access, the filter language, spec diffs, mask pictures, forms and
background launches. Pure functions live here so that tests can call them directly; the pages in
``app/views`` only lay out widgets and figures. Result vocabulary (metric directions, run labels, Pareto
fronts, SAD/IoU) is ``workbench.results`` and figures the widgets draw too are ``workbench.figures``."""

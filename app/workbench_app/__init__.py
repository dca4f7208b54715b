"""Helpers of the Streamlit app: store access, the filter language, spec diffs, Pareto fronts, mask
pictures and background launches. Pure functions live here so that tests can call them directly;
the pages in ``app/pages`` only lay out widgets and figures."""

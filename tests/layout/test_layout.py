"""The layout's rules, read from the source: no import circles, and each room imports only what it may."""

import pytest

from tests.layout.import_graph import circles, module_graph, room_graph

# Rooms below the job layer compute; they never reach the store, the runner, the executors or a UI.
METHOD_ROOMS = ["workbench.pruning", "workbench.training", "workbench.kernels", "workbench.metrics",
                "workbench.models", "workbench.data", "workbench.structured"]
UPPER_ROOMS = {"workbench.store", "workbench.runner", "workbench.jobs", "workbench.queries", "workbench.api",
               "workbench.cli", "workbench.widgets"}
GROUND_FLOOR = ["workbench.values", "workbench.errors", "workbench.records", "workbench.results", "workbench.faults",
                "workbench.progress"]


@pytest.fixture(scope="module")
def graph():
    return module_graph()


def test_no_import_circles_between_modules(graph):
    assert circles(graph) == []


def test_no_circles_between_rooms(graph):
    assert circles(room_graph(graph)) == []


@pytest.mark.parametrize("room", METHOD_ROOMS)
def test_methods_stay_free_of_store_runner_and_uis(graph, room):
    reached = room_graph(graph).get(room, set())
    assert not reached & UPPER_ROOMS, f"{room} imports {sorted(reached & UPPER_ROOMS)}"


@pytest.mark.parametrize("room", GROUND_FLOOR)
def test_ground_floor_imports_only_the_ground_floor(graph, room):
    reached = room_graph(graph).get(room, set())
    assert reached <= set(GROUND_FLOOR), f"{room} imports {sorted(reached - set(GROUND_FLOOR))}"


def test_the_reader_sees_a_circle():
    """The graph reader itself: two modules importing each other are one circle."""
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]

"""EvoPress and random search on a synthetic fitness: constraints, budget, elitism, seeds, resuming."""

from __future__ import annotations

import json
import random

import pytest

from workbench.search.evolution import Plan, SearchState, mutate, random_candidate, search

LOW = (-3, -3, -2, -3, -1, -3, -3, -3, 0, -3)
HIGH = (3, 2, 3, 3, 3, 1, 3, 3, 3, 0)
OPTIMUM = (2, -2, 3, -3, 1, 0, 0, -1, 0, 0)
PLAN = Plan(generations=12, offspring=6, survivors=(3, 2, 1), windows=(1, 2, 4))


class Recorder:
    """A fitness with a known optimum, a little noise that depends on the windows, and a log of every call."""

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __call__(self, candidate, windows) -> float:
        windows = tuple(windows)
        self.calls.append((candidate, windows))
        distance = sum((c - o) ** 2 for c, o in zip(candidate, OPTIMUM))
        noise = 0.01 * sum((w + 1) * c for w, c in zip(windows, candidate)) / len(windows)
        return distance + noise


def test_every_candidate_keeps_the_total_and_its_ranges():
    for method in ("evopress", "random"):
        recorder = Recorder()
        search(method, LOW, HIGH, PLAN, recorder, seed=3)
        for candidate, _ in recorder.calls:
            assert sum(candidate) == 0
            assert all(lo <= level <= hi for lo, level, hi in zip(LOW, candidate, HIGH))


def test_moves_and_random_draws_stay_inside():
    rng = random.Random(0)
    for _ in range(500):
        child = mutate((0,) * len(LOW), LOW, HIGH, rng)
        assert sum(child) == 0 and all(lo <= c <= hi for lo, c, hi in zip(LOW, child, HIGH))
        assert sum(abs(c) for c in child) <= 6  # one to three moves, each +1 and -1 (two may cancel)
        drawn = random_candidate(LOW, HIGH, rng)
        assert sum(drawn) == 0 and all(lo <= c <= hi for lo, c, hi in zip(LOW, drawn, HIGH))


def test_a_seed_reproduces_the_search_and_another_seed_differs():
    first = search("evopress", LOW, HIGH, PLAN, Recorder(), seed=7)
    again = search("evopress", LOW, HIGH, PLAN, Recorder(), seed=7)
    other = search("evopress", LOW, HIGH, PLAN, Recorder(), seed=8)
    assert first.to_json() == again.to_json()
    assert first.history != other.history or first.parent != other.parent


def test_the_answer_is_never_worse_than_any_candidate_measured_on_the_last_stage():
    for method in ("evopress", "random"):
        recorder = Recorder()
        state = search(method, LOW, HIGH, PLAN, recorder, seed=1)
        last_stage = [recorder(c, w) for c, w in list(recorder.calls) if len(w) == PLAN.pool]
        assert state.fitness == min(last_stage)
        assert state.fitness == min([state.history[0], *state.final_stage])
        assert all(b <= a for a, b in zip(state.history, state.history[1:]))  # elitist: never gets worse
        assert recorder(state.parent, range(PLAN.pool)) == state.fitness


def test_evopress_finds_better_than_uniform():
    state = search("evopress", LOW, HIGH, PLAN, Recorder(), seed=0)
    assert state.fitness < state.history[0]


def test_random_search_spends_exactly_the_evaluations_of_evopress_on_the_same_stages():
    spent = {}
    for method in ("evopress", "random"):
        recorder = Recorder()
        state = search(method, LOW, HIGH, PLAN, recorder, seed=5)
        assert state.evaluations == len(recorder.calls) == PLAN.evaluations()
        spent[method] = sorted(len(windows) for _, windows in recorder.calls)
    assert spent["evopress"] == spent["random"]
    assert spent["random"].count(PLAN.pool) == 1 + PLAN.generations * PLAN.survivors[-2]


def test_duplicates_are_avoided_within_a_generation():
    recorder = Recorder()
    search("evopress", LOW, HIGH, Plan(1, 8, (1,), (4,)), recorder, seed=2)
    offspring = [candidate for candidate, _ in recorder.calls[1:]]
    assert len(offspring) == 8 and len(set(offspring)) == 8 and (0,) * len(LOW) not in offspring


@pytest.mark.parametrize("method", ["evopress", "random"])
def test_a_search_continued_from_its_state_ends_where_an_uninterrupted_one_does(method):
    reference = search(method, LOW, HIGH, PLAN, Recorder(), seed=11)
    saved = {}

    def keep(state: SearchState) -> None:
        saved[state.generation] = json.dumps(state.to_json())

    search(method, LOW, HIGH, Plan(5, PLAN.offspring, PLAN.survivors, PLAN.windows), Recorder(), seed=11,
           on_generation=keep)
    assert sorted(saved) == [0, 1, 2, 3, 4, 5]
    state = SearchState.from_json(json.loads(saved[5]))
    recorder = Recorder()
    resumed = search(method, LOW, HIGH, PLAN, recorder, seed=11, state=state)
    assert resumed.to_json() == reference.to_json()
    assert len(recorder.calls) == (PLAN.generations - 5) * (PLAN.offspring + sum(PLAN.survivors[:-1]))

"""EvoPress and random search on a synthetic fitness: constraints, budget, elitism, seeds, resuming; the
depth space (0/1 levels with a fixed count) and spaces of several classes."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from workbench.search.depth import depth_space
from workbench.search.evolution import Plan, SearchState, Space, mutate, random_candidate, search

LOW = (-3, -3, -2, -3, -1, -3, -3, -3, 0, -3)
HIGH = (3, 2, 3, 3, 3, 1, 3, 3, 3, 0)
SPACE = Space(LOW, HIGH)
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
        search(method, SPACE, PLAN, recorder, seed=3)
        for candidate, _ in recorder.calls:
            assert sum(candidate) == 0
            assert all(lo <= level <= hi for lo, level, hi in zip(LOW, candidate, HIGH))


def test_moves_and_random_draws_stay_inside():
    rng = random.Random(0)
    for _ in range(500):
        child = mutate((0,) * len(LOW), SPACE, rng)
        assert sum(child) == 0 and all(lo <= c <= hi for lo, c, hi in zip(LOW, child, HIGH))
        assert sum(abs(c) for c in child) <= 6  # one to three moves, each +1 and -1 (two may cancel)
        drawn = random_candidate(SPACE, rng)
        assert sum(drawn) == 0 and all(lo <= c <= hi for lo, c, hi in zip(LOW, drawn, HIGH))


def test_a_seed_reproduces_the_search_and_another_seed_differs():
    first = search("evopress", SPACE, PLAN, Recorder(), seed=7)
    again = search("evopress", SPACE, PLAN, Recorder(), seed=7)
    other = search("evopress", SPACE, PLAN, Recorder(), seed=8)
    assert first.to_json() == again.to_json()
    assert first.history != other.history or first.parent != other.parent


def test_the_answer_is_never_worse_than_any_candidate_measured_on_the_last_stage():
    for method in ("evopress", "random"):
        recorder = Recorder()
        state = search(method, SPACE, PLAN, recorder, seed=1)
        last_stage = [recorder(c, w) for c, w in list(recorder.calls) if len(w) == PLAN.pool]
        assert state.fitness == min(last_stage)
        assert state.fitness == min([state.history[0], *state.final_stage])
        assert all(b <= a for a, b in zip(state.history, state.history[1:]))  # elitist: never gets worse
        assert recorder(state.parent, range(PLAN.pool)) == state.fitness


def test_evopress_finds_better_than_uniform():
    state = search("evopress", SPACE, PLAN, Recorder(), seed=0)
    assert state.fitness < state.history[0]


def test_random_search_spends_exactly_the_evaluations_of_evopress_on_the_same_stages():
    spent = {}
    for method in ("evopress", "random"):
        recorder = Recorder()
        state = search(method, SPACE, PLAN, recorder, seed=5)
        assert state.evaluations == len(recorder.calls) == PLAN.evaluations()
        spent[method] = sorted(len(windows) for _, windows in recorder.calls)
    assert spent["evopress"] == spent["random"]
    assert spent["random"].count(PLAN.pool) == 1 + PLAN.generations * PLAN.survivors[-2]


def test_duplicates_are_avoided_within_a_generation():
    recorder = Recorder()
    search("evopress", SPACE, Plan(1, 8, (1,), (4,)), recorder, seed=2)
    offspring = [candidate for candidate, _ in recorder.calls[1:]]
    assert len(offspring) == 8 and len(set(offspring)) == 8 and (0,) * len(LOW) not in offspring


@pytest.mark.parametrize("method", ["evopress", "random"])
def test_a_search_continued_from_its_state_ends_where_an_uninterrupted_one_does(method):
    reference = search(method, SPACE, PLAN, Recorder(), seed=11)
    saved = {}

    def keep(state: SearchState) -> None:
        saved[state.generation] = json.dumps(state.to_json())

    search(method, SPACE, Plan(5, PLAN.offspring, PLAN.survivors, PLAN.windows), Recorder(), seed=11,
           on_generation=keep)
    assert sorted(saved) == [0, 1, 2, 3, 4, 5]
    state = SearchState.from_json(json.loads(saved[5]))
    recorder = Recorder()
    resumed = search(method, SPACE, PLAN, recorder, seed=11, state=state)
    assert resumed.to_json() == reference.to_json()
    assert len(recorder.calls) == (PLAN.generations - 5) * (PLAN.offspring + sum(PLAN.survivors[:-1]))


DEPTH = depth_space(10, 4)
DEPTH_OPTIMUM = (0, 1, 0, 0, 1, 0, 1, 0, 1, 0)


class DepthRecorder(Recorder):
    """Blocks dropped outside a known best set of four, plus a little noise that depends on the windows."""

    def __call__(self, candidate, windows) -> float:
        windows = tuple(windows)
        self.calls.append((candidate, windows))
        wrong = sum(c and not o for c, o in zip(candidate, DEPTH_OPTIMUM))
        return wrong + 0.01 * sum((w + 1) * (i + 1) * c for w in windows for i, c in enumerate(candidate)) / 100


def test_a_depth_move_swaps_dropped_for_kept_blocks_and_the_count_stays():
    rng = random.Random(0)
    parent = (1, 1, 1, 1, 0, 0, 0, 0, 0, 0)
    changed = set()
    for _ in range(500):
        child = mutate(parent, DEPTH, rng)
        assert set(child) <= {0, 1} and sum(child) == 4
        restored = sum(p and not c for p, c in zip(parent, child))
        assert restored == sum(c and not p for p, c in zip(parent, child)) <= 3  # as many dropped as restored
        changed.add(restored)
    assert changed == {0, 1, 2, 3}  # 0: two swaps that undo each other (such a child is drawn again)


def test_random_depth_candidates_drop_the_count_and_every_choice_is_alike():
    rng = random.Random(0)
    drawn = Counter(random_candidate(depth_space(5, 2), rng) for _ in range(5000))
    assert len(drawn) == 10 and all(sum(c) == 2 and set(c) <= {0, 1} for c in drawn)
    assert max(drawn.values()) < 1.2 * min(drawn.values())  # 500 expected each


def test_a_depth_search_keeps_the_count_spends_the_same_budget_and_a_seed_reproduces_it():
    spent = {}
    for method in ("evopress", "random"):
        recorder = DepthRecorder()
        state = search(method, DEPTH, PLAN, recorder, seed=4)
        assert all(sum(c) == 4 and set(c) <= {0, 1} for c, _ in recorder.calls)
        assert state.evaluations == len(recorder.calls) == PLAN.evaluations(uniform_start=False)
        spent[method] = sorted(len(windows) for _, windows in recorder.calls)
        again = search(method, DEPTH, PLAN, DepthRecorder(), seed=4)
        assert again.to_json() == state.to_json()
        # the start round is the same random round for both methods: its best is the first parent
        start = recorder.calls[:PLAN.round()]
        assert state.history[0] == min(recorder(c, w) for c, w in start if len(w) == PLAN.pool)
        assert state.fitness == min(state.final_stage) <= state.history[0]
    assert spent["evopress"] == spent["random"]


def test_evopress_finds_the_blocks_to_drop():
    state = search("evopress", DEPTH, Plan(30, 6, (3, 2, 1), (1, 2, 4)), DepthRecorder(), seed=0)
    assert state.parent == DEPTH_OPTIMUM


def test_moves_and_draws_keep_the_sum_of_every_class():
    space = Space((-2, -2, -1, -2, -2), (2, 2, 1, 2, 2), classes=(0, 1, 0, 1, 1), totals=(0, 0))
    rng = random.Random(1)
    for _ in range(500):
        for candidate in (mutate((0,) * 5, space, rng), random_candidate(space, rng)):
            assert space.admits(candidate)
            assert candidate[0] + candidate[2] == 0 and candidate[1] + candidate[3] + candidate[4] == 0
    with pytest.raises(ValueError, match="class 1"):
        Space((0, 0), (1, 1), classes=(0, 1), totals=(1, 2))

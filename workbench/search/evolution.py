"""EvoPress and random search over level vectors (Sieberling et al., 2024, "EvoPress: Towards Optimal
Dynamic Model Compression via Evolutionary Search", section 4 and the authors' pruning search).

A candidate is one level per layer, each within the layer's ``low..high``, summing to zero (so every
candidate prunes as many weights as the uniform allocation, all levels 0). Nothing here knows models:
the fitness is a function ``evaluate(candidate, windows) -> float`` (lower is better) of a candidate and
the fitness windows (indices into a fixed pool) it is measured on.

EvoPress, per generation:

- offspring: ``budget.offspring`` distinct copies of the parent, each changed by
  ``min(randint(1, 3), randint(1, 3))`` moves; a move lowers one layer's level and raises another's by one
  (layers drawn uniformly among those that can move that way), so the sum stays zero;
- selection in stages: stage k measures every remaining candidate on ``tokens[k]`` tokens and keeps the
  best ``survivors[k]``. Earlier stages draw their windows at random from the pool, anew each time; the
  last stage reads the whole pool, always the same windows, so its values compare across generations;
- elitism: the parent's fitness on the last stage is known, and an offspring replaces it only when
  strictly better there. The parent's fitness per generation is therefore non-increasing, and the
  returned candidate is the best of every candidate measured on the last stage.

As in the authors' code the search starts from the uniform allocation and avoids duplicate offspring.
One difference: their last stage draws a fresh minibatch and re-measures the parent on it each
generation; here it is the fixed pool, so the parent's value is reused rather than re-measured.

Random search spends exactly the same evaluations on the same stages: per round, ``offspring``
candidates drawn uniformly (every layer's level uniform in its range, then single levels moved at random
towards a zero sum), screened by the same stages; the best on the last stage so far (starting from the
uniform allocation, measured first like EvoPress's start) is its answer.

``SearchState`` is everything needed to continue a search (the random generator's state included), as
JSON: a search stopped after any generation and continued from its state ends exactly where an
uninterrupted one does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Candidate = tuple[int, ...]
Evaluate = Callable[[Candidate, Sequence[int]], float]
METHODS = ("evopress", "random")
MAX_DRAWS_PER_OFFSPRING = 1000  # a space too small for distinct offspring: duplicates allowed after this


@dataclass(frozen=True)
class Plan:
    """A budget in windows: offspring per generation, survivors and fitness windows per stage."""

    generations: int
    offspring: int
    survivors: tuple[int, ...]
    windows: tuple[int, ...]  # the last stage reads the whole pool: windows[-1] = pool size

    @property
    def pool(self) -> int:
        return self.windows[-1]

    def evaluations(self) -> int:
        return 1 + self.generations * (self.offspring + sum(self.survivors[:-1]))


@dataclass
class SearchState:
    method: str
    parent: Candidate  # EvoPress: the parent; random search: the best candidate so far
    fitness: float  # the parent's fitness on the last stage (the whole pool)
    generation: int = 0  # generations done
    evaluations: int = 1
    history: list[float] = field(default_factory=list)  # parent's fitness after each generation; [0]: uniform
    final_stage: list[float] = field(default_factory=list)  # every last-stage fitness, in order
    rng_state: Any = None

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.rng_state
        return {"method": self.method, "parent": list(self.parent), "fitness": self.fitness,
                "generation": self.generation, "evaluations": self.evaluations, "history": self.history,
                "final_stage": self.final_stage, "rng_state": [version, list(internal), gauss]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SearchState":
        version, internal, gauss = data["rng_state"]
        return cls(method=data["method"], parent=tuple(data["parent"]), fitness=float(data["fitness"]),
                   generation=int(data["generation"]), evaluations=int(data["evaluations"]),
                   history=[float(v) for v in data["history"]], final_stage=[float(v) for v in data["final_stage"]],
                   rng_state=(version, tuple(internal), gauss))


def mutate(parent: Candidate, low: Sequence[int], high: Sequence[int], rng: random.Random) -> Candidate:
    """EvoPress's offspring: min(randint(1,3), randint(1,3)) moves of one level from a layer to another."""
    child = list(parent)
    for _ in range(min(rng.randint(1, 3), rng.randint(1, 3))):
        lower = [i for i, level in enumerate(child) if level > low[i]]
        if not lower:
            break
        down = rng.choice(lower)
        raise_ = [i for i, level in enumerate(child) if level < high[i] and i != down]
        if not raise_:
            break
        up = rng.choice(raise_)
        child[down] -= 1
        child[up] += 1
    return tuple(child)


def random_candidate(low: Sequence[int], high: Sequence[int], rng: random.Random) -> Candidate:
    """Every level uniform in its range, then single levels moved at random until they sum to zero."""
    levels = [rng.randint(lo, hi) for lo, hi in zip(low, high)]
    while (total := sum(levels)) != 0:
        if total > 0:
            index = rng.choice([i for i, level in enumerate(levels) if level > low[i]])
            levels[index] -= 1
        else:
            index = rng.choice([i for i, level in enumerate(levels) if level < high[i]])
            levels[index] += 1
    return tuple(levels)


def _draw(count: int, make: Callable[[], Candidate], exclude: set[Candidate]) -> list[Candidate]:
    drawn: list[Candidate] = []
    seen = set(exclude)
    for _ in range(count * MAX_DRAWS_PER_OFFSPRING):
        if len(drawn) == count:
            break
        candidate = make()
        if candidate not in seen:
            seen.add(candidate)
            drawn.append(candidate)
    while len(drawn) < count:  # the space holds fewer distinct candidates than asked for
        drawn.append(make())
    return drawn


def start(method: str, size: int, plan: Plan, evaluate: Evaluate, seed: int) -> SearchState:
    """The uniform allocation measured on the last stage: where both searches begin."""
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; use one of {METHODS}")
    uniform = (0,) * size
    fitness = evaluate(uniform, range(plan.pool))
    rng = random.Random(seed)
    return SearchState(method, uniform, fitness, history=[fitness], rng_state=rng.getstate())


def step(state: SearchState, low: Sequence[int], high: Sequence[int], plan: Plan, evaluate: Evaluate) -> None:
    """One generation (EvoPress) or one round (random search), in place."""
    rng = random.Random()
    rng.setstate(state.rng_state)
    if state.method == "evopress":
        candidates = _draw(plan.offspring, lambda: mutate(state.parent, low, high, rng), {state.parent})
    else:
        candidates = _draw(plan.offspring, lambda: random_candidate(low, high, rng), {state.parent})
    for stage, (keep, count) in enumerate(zip(plan.survivors, plan.windows)):
        last = stage == len(plan.windows) - 1
        windows = range(plan.pool) if last else sorted(rng.sample(range(plan.pool), count))
        scores = [evaluate(candidate, windows) for candidate in candidates]
        state.evaluations += len(candidates)
        if not last:
            order = sorted(range(len(candidates)), key=scores.__getitem__)[:keep]  # stable: ties keep draw order
            candidates = [candidates[i] for i in order]
            continue
        state.final_stage.extend(scores)
        best = min(range(len(candidates)), key=scores.__getitem__)
        if scores[best] < state.fitness:  # elitist: the parent stays unless strictly beaten
            state.parent, state.fitness = candidates[best], scores[best]
    state.generation += 1
    state.history.append(state.fitness)
    state.rng_state = rng.getstate()


def search(method: str, low: Sequence[int], high: Sequence[int], plan: Plan, evaluate: Evaluate, seed: int,
           state: SearchState | None = None,
           on_generation: Callable[[SearchState], None] | None = None) -> SearchState:
    """Run (or continue, from ``state``) a whole search; ``on_generation`` sees the state after the start
    and after every generation (to checkpoint it)."""
    if state is None:
        state = start(method, len(low), plan, evaluate, seed)
        if on_generation:
            on_generation(state)
    while state.generation < plan.generations:
        step(state, low, high, plan, evaluate)
        if on_generation:
            on_generation(state)
    return state

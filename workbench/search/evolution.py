"""EvoPress and random search over level vectors (Sieberling et al., 2024, "EvoPress: Towards Optimal
Dynamic Model Compression via Evolutionary Search", section 4 and the authors' pruning search).

A candidate is one level per position (a layer, or a block), each within the position's ``low..high``
(a ``Space``). Positions fall into classes, and the levels of each class sum to the class's total: the
level spaces (unstructured, N:M, structured widths) have totals of zero, so every candidate prunes as much
as the uniform allocation (all levels 0); the depth space has one class of 0/1 levels (1 = dropped)
summing to the number of blocks dropped. Nothing here knows models: the fitness is a function
``evaluate(candidate, windows) -> float`` (lower is better) of a candidate and the fitness windows
(indices into a fixed pool) it is measured on.

EvoPress, per generation:

- offspring: ``budget.offspring`` distinct copies of the parent, each changed by
  ``min(randint(1, 3), randint(1, 3))`` moves; a move lowers one position's level and raises another's of
  the same class by one (drawn uniformly among those that can move that way), so every class keeps its sum.
  With 0/1 levels (depth) a move swaps one dropped block for one kept block;
- selection in stages: stage k measures every remaining candidate on ``tokens[k]`` tokens and keeps the
  best ``survivors[k]``. Earlier stages draw their windows at random from the pool, anew each time; the
  last stage reads the whole pool, always the same windows, so its values compare across generations;
- elitism: the parent's fitness on the last stage is known, and an offspring replaces it only when
  strictly better there. The parent's fitness per generation is therefore non-increasing, and the
  returned candidate is the best of every candidate measured on the last stage.

As in the authors' code the search starts from the uniform allocation where there is one (all levels 0)
and avoids duplicate offspring. Where there is none (depth: which blocks to drop), it starts as the authors'
layer-dropping search does, from the best of random candidates: a start round draws ``offspring`` random
candidates and screens them through the same stages, and the best on the last stage is the first parent.
One difference: their last stage draws a fresh minibatch and re-measures the parent on it each
generation; here it is the fixed pool, so the parent's value is reused rather than re-measured.

Random search spends exactly the same evaluations on the same stages: per round, ``offspring``
candidates drawn uniformly (every level uniform in its range, then single levels moved at random until
each class has its sum; with 0/1 levels that is a uniform draw of which blocks to drop), screened by the
same stages; the best on the last stage so far (starting from the same start as EvoPress: the uniform
allocation, or the same start round) is its answer.

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
class Space:
    """Admissible candidates: ``low[i] <= level[i] <= high[i]``, and the levels of the positions of each class
    (``classes[i]``, numbered from 0; all 0 when absent) sum to ``totals[class]``."""

    low: tuple[int, ...]
    high: tuple[int, ...]
    classes: tuple[int, ...] = ()
    totals: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", tuple(self.low))
        object.__setattr__(self, "high", tuple(self.high))
        object.__setattr__(self, "classes", tuple(self.classes) or (0,) * len(self.low))
        object.__setattr__(self, "totals", tuple(self.totals))
        if len(self.classes) != len(self.low) or len(self.high) != len(self.low):
            raise ValueError("low, high and classes need one entry per position")
        for kind, total in enumerate(self.totals):
            members = [i for i, c in enumerate(self.classes) if c == kind]
            if not sum(self.low[i] for i in members) <= total <= sum(self.high[i] for i in members):
                raise ValueError(f"no levels of class {kind} within their ranges sum to {total}")

    @property
    def size(self) -> int:
        return len(self.low)

    def uniform(self) -> Candidate | None:
        """All levels 0, when that is admissible (the uniform allocation of the level spaces)."""
        zero = (0,) * self.size
        return zero if self.admits(zero) else None

    def admits(self, candidate: Sequence[int]) -> bool:
        if len(candidate) != self.size or any(not lo <= c <= hi for lo, c, hi in zip(self.low, candidate, self.high)):
            return False
        sums = [0] * len(self.totals)
        for kind, level in zip(self.classes, candidate):
            sums[kind] += level
        return tuple(sums) == self.totals


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

    def round(self) -> int:
        """Evaluations of one generation (or of the start round): every offspring in the first stage and the
        survivors of each stage in the next."""
        return self.offspring + sum(self.survivors[:-1])

    def evaluations(self, uniform_start: bool = True) -> int:
        """The start (the uniform allocation measured once, or a start round), then every generation."""
        return (1 if uniform_start else self.round()) + self.generations * self.round()


@dataclass
class SearchState:
    method: str
    parent: Candidate  # EvoPress: the parent; random search: the best candidate so far
    fitness: float  # the parent's fitness on the last stage (the whole pool)
    generation: int = 0  # generations done
    evaluations: int = 1
    history: list[float] = field(default_factory=list)  # parent's fitness after each generation; [0]: the start
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


def mutate(parent: Candidate, space: Space, rng: random.Random) -> Candidate:
    """EvoPress's offspring: min(randint(1,3), randint(1,3)) moves of one level from a position to another of
    its class (depth: a dropped block swapped for a kept one)."""
    low, high, classes = space.low, space.high, space.classes
    child = list(parent)
    for _ in range(min(rng.randint(1, 3), rng.randint(1, 3))):
        lower = [i for i, level in enumerate(child) if level > low[i]]
        if not lower:
            break
        down = rng.choice(lower)
        raise_ = [i for i, level in enumerate(child) if level < high[i] and i != down and classes[i] == classes[down]]
        if not raise_:
            break
        up = rng.choice(raise_)
        child[down] -= 1
        child[up] += 1
    return tuple(child)


def random_candidate(space: Space, rng: random.Random) -> Candidate:
    """Every level uniform in its range, then single levels of each class moved at random until the class
    has its sum (the moves treat every position alike, so with 0/1 levels every choice of blocks to drop is
    equally likely)."""
    low, high = space.low, space.high
    levels = [rng.randint(lo, hi) for lo, hi in zip(low, high)]
    for kind, wanted in enumerate(space.totals):
        members = [i for i, c in enumerate(space.classes) if c == kind]
        while (total := sum(levels[i] for i in members)) != wanted:
            if total > wanted:
                index = rng.choice([i for i in members if levels[i] > low[i]])
                levels[index] -= 1
            else:
                index = rng.choice([i for i in members if levels[i] < high[i]])
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


def start(method: str, space: Space, plan: Plan, evaluate: Evaluate, seed: int) -> SearchState:
    """Where both searches begin: the uniform allocation measured on the last stage, or, in a space without
    one, the best of a start round of random candidates (the same for both methods)."""
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; use one of {METHODS}")
    rng = random.Random(seed)
    uniform = space.uniform()
    if uniform is not None:
        fitness = evaluate(uniform, range(plan.pool))
        return SearchState(method, uniform, fitness, history=[fitness], rng_state=rng.getstate())
    state = SearchState(method, (), float("inf"), evaluations=0)
    _select(state, _draw(plan.offspring, lambda: random_candidate(space, rng), set()), plan, evaluate, rng)
    state.history.append(state.fitness)
    state.rng_state = rng.getstate()
    return state


def step(state: SearchState, space: Space, plan: Plan, evaluate: Evaluate) -> None:
    """One generation (EvoPress) or one round (random search), in place."""
    rng = random.Random()
    rng.setstate(state.rng_state)
    if state.method == "evopress":
        candidates = _draw(plan.offspring, lambda: mutate(state.parent, space, rng), {state.parent})
    else:
        candidates = _draw(plan.offspring, lambda: random_candidate(space, rng), {state.parent})
    _select(state, candidates, plan, evaluate, rng)
    state.generation += 1
    state.history.append(state.fitness)
    state.rng_state = rng.getstate()


def _select(state: SearchState, candidates: list[Candidate], plan: Plan, evaluate: Evaluate,
            rng: random.Random) -> None:
    """The stages: screen ``candidates``; the best on the last stage replaces the parent if strictly better."""
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
        if not state.parent or scores[best] < state.fitness:  # elitist: the parent stays unless strictly beaten
            state.parent, state.fitness = candidates[best], scores[best]


def search(method: str, space: Space, plan: Plan, evaluate: Evaluate, seed: int, state: SearchState | None = None,
           on_generation: Callable[[SearchState], None] | None = None) -> SearchState:
    """Run (or continue, from ``state``) a whole search; ``on_generation`` sees the state after the start
    and after every generation (to checkpoint it)."""
    if state is None:
        state = start(method, space, plan, evaluate, seed)
        if on_generation:
            on_generation(state)
    while state.generation < plan.generations:
        step(state, space, plan, evaluate)
        if on_generation:
            on_generation(state)
    return state

import pytest

from workbench.training.gmp import cubic_sparsity

from .helpers import drive, make_method


def test_cubic_schedule_values():
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, here s_i = 0, s_f = 0.9, t0 = 10, n = 4, dt = 5
    schedule = [cubic_sparsity(t, 0.9, 0.0, 10, 4, 5) for t in (0, 10, 15, 20, 25, 30, 99)]
    assert schedule == pytest.approx([0.0, 0.0, 0.9 - 0.9 * 0.75**3, 0.9 - 0.9 * 0.5**3, 0.9 - 0.9 * 0.25**3, 0.9, 0.9])


def test_sparsity_follows_the_schedule_and_pruned_weights_stay_zero():
    method = make_method("gmp", {"start": 0.1, "end": 0.6, "every": 10}, sparsity=0.8, total_steps=100,
                         optimizer="sgd")
    assert (method.t0, method.n, method.dt) == (10, 5, 10)
    pruning_steps, previous = [], {n: m.clone() for n, m in method.mask.items()}

    def watch(step, phase):
        for name, module in method.context.layers.items():
            weight, mask = module.weight, method.mask[name]
            if phase == "begin" and method.is_pruning_step(step):
                target = cubic_sparsity(step, 0.8, 0.0, 10, 5, 10)
                assert int((~mask).sum()) == round(target * weight.numel()), (name, step)
                # magnitude: nothing pruned outweighs anything kept
                if (~mask).any() and mask.any():
                    assert weight.detach().abs()[~mask].max() <= weight.detach().abs()[mask].min()
                # once pruned, always pruned
                assert not (mask & ~previous[name]).any()
                previous[name] = mask.clone()
            assert (weight.detach()[~mask] == 0).all(), (name, step, phase)
        if phase == "begin" and method.is_pruning_step(step):
            pruning_steps.append(step)

    drive(method, 100, watch)
    assert pruning_steps == [10, 20, 30, 40, 50, 60]
    for module in method.context.layers.values():
        assert int((module.weight == 0).sum()) == round(0.8 * module.weight.numel())


def test_erk_density_spreads_sparsity_but_keeps_the_total():
    method = make_method("gmp", {"start": 0.0, "end": 0.1, "every": 1}, sparsity=0.8, total_steps=10,
                         density="erk")
    drive(method, 10)
    total = sum(m.weight.numel() for m in method.context.layers.values())
    zeros = sum(int((~method.mask[n]).sum()) for n in method.context.layers)
    assert zeros / total == pytest.approx(0.8, abs=2e-3)
    assert len({round(float((~m).float().mean()), 3) for m in method.mask.values()}) > 1

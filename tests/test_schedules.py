import pytest

from gnnprune.schedules import Constant, CosineDecay, CubicSparsity, update_steps


@pytest.mark.parametrize("final", [0.0, 0.5, 0.9, 0.98])
def test_cubic_hits_endpoints_and_is_monotone(final):
    s = CubicSparsity(0.0, final, start=10, end=100)
    values = [s(t) for t in range(0, 130)]
    assert values[0] == values[10] == 0.0
    assert values[100] == values[129] == final
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(0.0 <= v <= final for v in values)


def test_cubic_is_front_loaded():
    s = CubicSparsity(0.0, 0.8, start=0, end=100)
    assert s(50) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert s(50) > 0.5 * 0.8


def test_cosine_decay_endpoints_monotone():
    c = CosineDecay(0.3, 10, 100)
    assert c(10) == pytest.approx(0.3)
    assert c(55) == pytest.approx(0.15)
    assert c(100) == 0.0 and c(150) == 0.0
    values = [c(t) for t in range(10, 101)]
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_constant_and_update_steps():
    assert Constant(0.2)(123) == 0.2
    assert update_steps(10, 100, 20) == [10, 30, 50, 70, 90, 100]
    assert update_steps(0, 0, 5) == [0]
    assert update_steps(0, 10, 5) == [0, 5, 10]


@pytest.mark.parametrize("bad", [dict(initial=0.0, final=1.0, start=0, end=1), dict(initial=-0.1, final=0.5, start=0, end=1),
                                 dict(initial=0.0, final=0.5, start=5, end=1)])
def test_cubic_validates(bad):
    with pytest.raises(ValueError):
        CubicSparsity(**bad)


def test_update_steps_validates():
    with pytest.raises(ValueError):
        update_steps(0, 10, 0)

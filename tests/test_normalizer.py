import pytest
import torch

from dreamer.actor_critic import ReturnNormalizer


def test_return_normalizer_tracks_percentiles_with_ema():
    normalizer = ReturnNormalizer(rate=0.5)
    returns = torch.arange(101, dtype=torch.float32)  # p5 = 5, p95 = 95
    normalizer.update(returns)
    assert normalizer.low_value.item() == pytest.approx(2.5)
    assert normalizer.high_value.item() == pytest.approx(47.5)
    assert normalizer.scale().item() == pytest.approx(45.0)
    normalizer.update(returns)
    assert normalizer.scale().item() == pytest.approx(67.5)


def test_return_normalizer_scale_never_below_one():
    normalizer = ReturnNormalizer(rate=1.0)
    normalizer.update(torch.full((50,), 3.0))
    assert normalizer.scale().item() == 1.0

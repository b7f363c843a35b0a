"""The loop's every-N-steps events share one rule."""

import pytest

from dreamer.runner import due


@pytest.mark.parametrize("step, last, every, expected", [
    (1000, 0, 1000, True),     # exactly one interval since the last time
    (999, 0, 1000, False),
    (2004, 1000, 1000, True),  # steps come in multiples of env_num * action_repeat: late is still due
    (5000, 0, 0, False),       # 0: never
    (0, 0, 1, False),
])
def test_event_is_due_once_an_interval_has_passed_since_it_last_ran(step, last, every, expected):
    assert due(step, last, every) is expected

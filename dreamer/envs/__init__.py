"""Environments behind one observation format (``image`` uint8 HWC and/or ``state``
float32, plus ``reward``, ``is_first``, ``is_last``, ``is_terminal``)."""

from dreamer.envs.base import ActionSpace, Env
from dreamer.envs.batch import EnvBatch

__all__ = ["ActionSpace", "Env", "EnvBatch"]

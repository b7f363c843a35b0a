"""Headless OpenGL for MuJoCo (dm_control, Meta-World) and frame resizing.

MuJoCo reads ``MUJOCO_GL`` once, when it is first imported, so the backend must be chosen
before any suite module imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from dreamer.envs.base import EnvSetupError

# Backend, and the Debian/Ubuntu packages that provide it.
GL_BACKENDS = {"egl": "libegl1 libegl-mesa0 libgl1", "osmesa": "libosmesa6"}
_PROBE = "import mujoco; context = mujoco.GLContext(8, 8); context.make_current(); context.free()"


def _backend_works(backend: str) -> bool:
    """Probe in a child process: a failed GL initialisation cannot be undone in this one."""
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend},
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


def select_mujoco_gl() -> str:
    """Honour a user-set ``MUJOCO_GL``; else pick the first working of egl, osmesa.

    The choice is written to the environment, so worker processes inherit it without probing.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    for backend in GL_BACKENDS:
        if _backend_works(backend):
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
    raise EnvSetupError(
        "MuJoCo found no headless OpenGL: run `apt-get install -y "
        + "` (egl) or `apt-get install -y ".join(GL_BACKENDS.values())
        + "` (osmesa), or set MUJOCO_GL to a backend that works"
    )


def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (*size, 3) uint8, bilinear as in DreamerV3; no copy if already that size."""
    if frame.shape[:2] == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize(tuple(size)[::-1], Image.BILINEAR))

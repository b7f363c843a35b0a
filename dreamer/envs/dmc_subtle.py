"""DMC-Subtle (spec 5): five DMC tasks whose task-relevant object is shrunk.

Sizes are changed in the compiled model, so masses and inertias stay those of the
original task and only what the camera sees (and what touches what) changes.  Where the
task itself writes a size at every reset (finger target, reacher target) the task's own
setting is scaled instead, so its reward keeps reading the shrunk size.
"""

from __future__ import annotations

from dreamer.envs.dmc import DMCEnv

# task: ((model array, element name, factor), ...) scaling element[0], the radius / width.
MODEL_SHRINK = {
    "ball_in_cup_catch": (("geom_size", "ball", 1 / 12), ("site_size", "ball", 1 / 12), ("tendon_width", "string", 1 / 12)),
    "point_mass_easy": (("geom_size", "target", 1 / 6), ("geom_size", "pointmass", 1 / 6)),
    "finger_turn_hard": (),
    "reacher_hard": (),
    "cartpole_swingup": (("geom_size", "pole_1", 1 / 20),),
}
# task: (task attribute, factor): radii the task writes into the model at every reset.
TASK_SHRINK = {
    "finger_turn_hard": ("_target_radius", 1 / 2),  # -> site_size['target'], read by the reward
    "reacher_hard": ("_target_size", 1 / 3),  # -> geom_size['target'], read by the reward
}


class DMCSubtleEnv(DMCEnv):
    """:class:`DMCEnv` restricted to the five DMC-Subtle tasks, with the shrunk objects."""

    suite_name = "DMC-Subtle"

    def valid_tasks(self, suite) -> list[tuple[str, str]]:
        return [pair for pair in suite.ALL_TASKS if "_".join(pair) in MODEL_SHRINK]

    def _load(self, suite, domain: str, name: str, seed: int | None):
        env = super()._load(suite, domain, name, seed)
        task = f"{domain}_{name}"
        named = env.physics.named.model
        for array, element, factor in MODEL_SHRINK[task]:
            values = getattr(named, array)
            if values[element].ndim:  # geom/site sizes are vectors; tendon widths scalars
                values[element, 0] *= factor
            else:
                values[element] *= factor
        if task in TASK_SHRINK:
            attribute, factor = TASK_SHRINK[task]
            setattr(env.task, attribute, getattr(env.task, attribute) * factor)
        return env

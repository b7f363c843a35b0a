"""Representation objectives: one module per ``rep_variant`` (spec 2).

Each objective is an :class:`~dreamer.representation.base.RepresentationObjective`;
the world model calls it without knowing which one it is.
"""

from dreamer.representation.base import ObjectiveInputs, ObjectiveContext, RepresentationObjective

__all__ = ["ObjectiveInputs", "ObjectiveContext", "RepresentationObjective"]

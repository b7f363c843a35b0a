"""A fifth representation objective is one Python file and one YAML file, trained through
the normal command line without touching the package."""

import textwrap

from conftest import QUICK, read_metrics, run_cli

OBJECTIVE = '''
"""Cosine alignment of P(s_t) with sg(e_t): a minimal fifth objective."""

import torch
import torch.nn.functional as F
from torch import nn

from dreamer.representation.base import ObjectiveContext, ObjectiveInputs, RepresentationObjective


class CosineObjective(RepresentationObjective):
    def __init__(self, context: ObjectiveContext, scale: float = 1.0):
        super().__init__()
        self.projector = nn.Linear(context.feature_size, context.embed_size, bias=False)
        self.scales = {"cosine": scale}

    def forward(self, inputs: ObjectiveInputs):
        projected = self.projector(inputs.features)  # (B, T, E)
        similarity = F.cosine_similarity(projected, inputs.embeddings.detach(), dim=-1)  # (B, T)
        return {"cosine": 1.0 - similarity}, {"cosine_similarity": similarity.mean().detach()}
'''

CONFIG = """
_target_: cosine_objective.CosineObjective
_partial_: true
scale: 0.5
"""


def test_a_fifth_objective_trains_from_one_module_and_one_yaml(tmp_path):
    (tmp_path / "cosine_objective.py").write_text(textwrap.dedent(OBJECTIVE))
    (tmp_path / "conf" / "rep_variant").mkdir(parents=True)
    (tmp_path / "conf" / "rep_variant" / "cosine.yaml").write_text(CONFIG)
    run_dir = tmp_path / "run"
    result = run_cli(
        *QUICK, "rep_variant=cosine", "steps=100", "eval_every=0", "log_every=50",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.run.dir={run_dir}", pythonpath=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for row in read_metrics(run_dir) if "train/loss/cosine" in row]
    assert rows and all(0.0 <= row["train/loss/cosine"] <= 2.0 for row in rows)
    assert all("train/cosine_similarity" in row for row in rows)
    assert rows[-1]["step"] == 100

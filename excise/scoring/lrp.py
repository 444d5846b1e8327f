"""LRP scorer: AttnLRP relevance through lxt's efficient-mode rules.

With the family's rules patched in (`excise.lrp.lrp_patched`), gradient x input *is*
LRP, so this is the gradient x input scorer started at the target's logit (not a loss):
relevance of a weight is W * W.grad summed over a sample's tokens, of a unit a * a.grad.
The patches are active only while a session runs and are undone afterwards; they are
process-wide meanwhile, so run it through `score_in_worker` beside anything else.

Tied embeddings: `lm_head.weight.grad` would mix in the embedding gradient, which does not
matter here: embeddings and lm_head are never scored (and weights get no .grad at all, see
`activation_gradients`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from excise.lrp import lrp_patched
from excise.scoring.gradient import GradientTimesInputScorer


class LrpScorer(GradientTimesInputScorer):
    name = "lrp"

    def objective(self, logits, batch):
        return self.target.objective(logits, batch)

    @contextmanager
    def session(self) -> Iterator[None]:
        with lrp_patched(self.adapter), super().session():
            yield

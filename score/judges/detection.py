"""Detection scorer (Paulo et al. 2024): "does this latent, as explained, fire anywhere in this text?"

Cheaper than simulation: a yes/no per context, several contexts per request. The items are the
latent's score-set examples: activating ones (label yes) and non-activating ones (label no), shuffled
with a seed derived from (seed, latent) so batches mix both kinds and reruns hit the cache. Precision,
recall, F1 and balanced accuracy come from score.metrics.binary_scores over the contexts. The score
row has the `scores` columns plus `balanced_accuracy`; auroc, correlation and threshold are NaN (not
defined for yes/no answers) and n_tokens / n_positive count contexts, not tokens.

`BinaryLLMScorer` (score/judges/base.py) is the shared machinery; score/judges/fuzzing.py builds its
items differently.
"""

from __future__ import annotations

from explain.llm.render import render_text
from explain.records import LatentRecord
from score.judges.base import BinaryLLMScorer, JudgedItem
from score.prompts import detect_messages


class DetectionScorer(BinaryLLMScorer):
    """Per context: does the latent fire anywhere in it? (label: the context is activating)."""

    name = "detection"
    purpose = "detection"
    messages_fn = staticmethod(detect_messages)

    def items_for(self, record: LatentRecord) -> list[JudgedItem]:
        items = [JudgedItem(render_text(e.tokens), e.is_activating) for e in record.score]
        return self._shuffled(record, items)

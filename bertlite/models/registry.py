"""Which network each architecture uses for each job: one table, so tasks and inference agree."""

from __future__ import annotations

from torch import nn

from bertlite.models.decoder import GPTForCausalLM, GPTForSequenceClassification
from bertlite.models.encoder import BertForMaskedLM, BertForSequenceClassification
from bertlite.models.seq2seq import TransformerForSeq2Seq, TransformerForSequenceClassification

# arch -> (classifier, its default pooling). A causal decoder has seen the whole text only at its last token.
CLASSIFIERS = {"bert": (BertForSequenceClassification, "cls"), "gpt": (GPTForSequenceClassification, "last"),
               "transformer": (TransformerForSequenceClassification, "last")}
PRETRAINING_MODELS = {"bert": BertForMaskedLM, "gpt": GPTForCausalLM, "transformer": TransformerForSeq2Seq}


def build_classifier(config, num_labels: int, pooling: str = "auto", classifier_dropout: float = 0.1) -> nn.Module:
    cls, default_pooling = CLASSIFIERS[config.arch]
    return cls(config, num_labels, default_pooling if pooling == "auto" else pooling, classifier_dropout)

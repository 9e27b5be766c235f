"""What a label column holds, and how its values become training targets.

Three kinds of label (``data.problem_type``, as Hugging Face's ``problem_type``):
- ``single_label``: one class per row, strings or integers -> a class index;
- ``multi_label``: a set of classes per row, a list (JSONL, Parquet) or a delimited string
  (``data.label_separator``) -> a multi-hot vector; an empty list or an empty cell means "none of the labels";
- ``regression``: a number per row (STS-B's similarity score) -> a float.
``auto`` picks regression for a float column, multi-label for lists or when a separator is given, and
single-label otherwise, and logs its choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import datasets

from bertlite.errors import DataError

log = logging.getLogger(__name__)

PROBLEM_TYPES = ("single_label", "multi_label", "regression")
AUTO_CHOICE = {"multi_label": "multi-label classification (BCE loss, one sigmoid per label; micro and macro F1)",
               "regression": "regression (one output, MSE loss; Pearson and Spearman correlation)",
               "single_label": "single-label classification (cross-entropy)"}


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None, or NaN: an empty numeric cell


def is_scalar(value) -> bool:
    """A class name or a number (a label of one class, or a regression target), or missing."""
    return is_missing(value) or isinstance(value, (str, int, float, bool))


def fits_float(value) -> bool:
    try:
        float(value)
    except (OverflowError, TypeError, ValueError):  # an integer beyond float's range, or no number at all
        return False
    return True


def class_name(value) -> str:
    """A class label as a name: 1.0 in a float column is class "1", as 1 in an integer column."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def label_set(value, separator: str | None) -> list[str]:
    """The labels of one multi-label row: a list, or a string split at ``separator``. None, an empty list and an
    empty string mean no labels."""
    if is_missing(value):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if not is_missing(v) and str(v).strip()]
    if separator is None:
        return [str(value)]
    return [part.strip() for part in str(value).split(separator) if part.strip()]


def label_feature(problem_type: str, num_labels: int) -> datasets.Value | datasets.Sequence:
    """The column type of an encoded label: a class index, a multi-hot vector or a number."""
    return {"single_label": datasets.Value("int64"), "regression": datasets.Value("float32"),
            "multi_label": datasets.Sequence(datasets.Value("float32"), length=num_labels)}[problem_type]


@dataclass
class LabelColumn:
    """The label column ``column`` of classification data: its problem type (``auto`` until ``resolve``), the
    separator of delimited multi-label strings, its label names, checks and encoding."""

    column: str
    problem_type: str = "auto"
    separator: str | None = None

    def __post_init__(self):
        if self.problem_type not in ("auto", *PROBLEM_TYPES):
            raise DataError(f"data.problem_type={self.problem_type!r}: choose auto, {', '.join(PROBLEM_TYPES)}")

    def resolve(self, feature) -> str:
        """Fix the problem type from the training column's type (``feature``); ``auto``'s choice is logged."""
        is_list = isinstance(feature, (datasets.Sequence, datasets.LargeList, list))
        if self.problem_type != "auto":
            if is_list and self.problem_type != "multi_label":
                raise DataError(f"column {self.column!r} holds lists of labels: set data.problem_type=multi_label "
                                f"(or auto), not {self.problem_type}")
            if self.problem_type == "multi_label" and not is_list and self.separator is None:
                raise DataError(f"data.problem_type=multi_label but column {self.column!r} holds single values: "
                                "give lists (JSONL) or set data.label_separator (e.g. ',') to split them")
            return self.problem_type
        if is_list or self.separator is not None:
            chosen, why = "multi_label", "lists of labels" if is_list else f"labels split at {self.separator!r}"
        elif getattr(feature, "dtype", "") in ("float16", "float32", "float64"):
            chosen, why = "regression", "numbers (a float column)"
        else:
            chosen, why = "single_label", "one class per row"
        log.info("data.problem_type=auto: column %r holds %s, so %s", self.column, why, AUTO_CHOICE[chosen])
        self.problem_type = chosen
        return chosen

    def names(self, values: Sequence) -> list[str]:
        """The label names of the training values: their sorted classes (integers sorted numerically), or the
        column's name for regression (one output)."""
        self.check_kinds("training", values)
        if self.problem_type == "multi_label":
            sets = [label_set(v, self.separator) for v in values]
            names = sorted(set().union(*sets))
            if not names:
                raise DataError(f"every training row has an empty label list in column {self.column!r}: "
                                "multi-label classification needs rows with labels")
            empty = sum(not s for s in sets)
            if empty:
                log.info("%d training rows have no labels (an empty list or cell): every label is negative", empty)
            return names
        missing = sum(map(is_missing, values))
        if missing:
            raise DataError(f"the training data has {missing} rows without a label in column {self.column!r}")
        if self.problem_type == "regression":
            self.check("training", values, [self.column])
            return [self.column]
        distinct = set(values)
        fractional = [v for v in distinct if isinstance(v, float) and not v.is_integer()]
        if fractional:
            raise DataError(f"data.problem_type=single_label but column {self.column!r} holds numbers such as "
                            f"{fractional[0]}: a score, not a class. Set data.problem_type=regression (or auto)")
        if len(distinct) < 2:
            raise DataError(f"the training data has only the label(s) {sorted(map(str, distinct))}; "
                            "classification needs at least two")
        numeric = all(isinstance(v, (int, float, bool)) for v in distinct)
        return [class_name(v) for v in (sorted(distinct) if numeric else sorted(distinct, key=str))]

    def check_kinds(self, split: str, values: Sequence) -> None:
        """Every label is a class name or a number (or, for multi-label data, a list of them): a JSON object, or a
        list where one class is expected, is one error here, never a TypeError in a later step."""
        multi = self.problem_type == "multi_label"
        for row, value in enumerate(values):
            if is_scalar(value) or (multi and isinstance(value, (list, tuple)) and all(map(is_scalar, value))):
                continue
            hint = ("; for lists of labels set data.problem_type=multi_label (or auto)"
                    if isinstance(value, (list, tuple)) and not multi else "")
            raise DataError(f"the {split} split's column {self.column!r} holds {repr(value)[:80]} in row {row}: a "
                            f"label must be a class name or a number{', or a list of them' if multi else ''}{hint}")

    def check(self, split: str, values: Sequence, names: list[str]) -> None:
        """Every label of a split must be one training saw (a number, for regression)."""
        self.check_kinds(split, values)
        if self.problem_type == "regression":
            bad = [v for v in values if is_missing(v) or isinstance(v, str) or not fits_float(v)]
            if bad:
                raise DataError(f"data.problem_type=regression but in the {split} split column {self.column!r} "
                                f"holds {bad[0]!r}, not a number ({len(bad)} such labels); for class labels set "
                                "data.problem_type=single_label (or auto)")
            return
        if self.problem_type == "multi_label":
            seen = set().union(*(label_set(v, self.separator) for v in values))
        else:
            seen = {class_name(v) for v in values}
        unseen = sorted(seen - set(names))
        if unseen:
            raise DataError(f"the {split} split has labels never seen in training: {unseen[:10]}; "
                            f"training labels are {names}")

    def encode(self, value, label_ids: dict[str, int]):
        """A class index, a multi-hot vector or a number."""
        if self.problem_type == "regression":
            return float(value)
        if self.problem_type == "multi_label":
            hot = [0.0] * len(label_ids)
            for name in label_set(value, self.separator):
                hot[label_ids[name]] = 1.0
            return hot
        return label_ids[class_name(value)]

"""The loop benchmark measures the desk as a new user gets it: each desk setting it sets defaults to the desk's."""

import pytest

from bench.loop import build_parser
from moderation.models import ModerationSettings

#: Benchmark flag -> the `ModerationSettings` field it is written to (bench/loop.py's set-up).
SETTINGS_FLAGS = {
    "threshold": "default_threshold",
    "precision_target": "precision_target",
    "recall_target": "recall_target",
    "qa_rate": "qa_rate",
    "min_holdout": "gate_min_holdout_per_label",
    "audit_rate": "audit_rate",
    "audit_sampling": "audit_sampling",
}


@pytest.mark.parametrize(("flag", "field"), sorted(SETTINGS_FLAGS.items()))
def test_benchmark_default_is_the_desks_default(flag, field):
    benchmark_default = getattr(build_parser().parse_args([]), flag)
    assert benchmark_default == ModerationSettings._meta.get_field(field).default


def test_a_flag_still_overrides_the_desks_default():
    args = build_parser().parse_args(["--audit-rate", "0.1"])
    assert args.audit_rate == 0.1 != ModerationSettings._meta.get_field("audit_rate").default

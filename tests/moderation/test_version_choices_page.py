"""The version page shows what cross-validation chose for the model, with every candidate's scores."""

import pytest
from django.urls import reverse

from moderation.models import ModelVersion
from tests.moderation.test_training_pages import clients, objects, registry  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loop_settings")]

RECORD = {
    "folds": 3,
    "images": 540,
    "criterion": "class-balanced cross-entropy on held-out folds (lower is better)",
    "candidates": [
        {"features": "conv_pw_9_relu+conv_pw_11_relu:symmetric", "l2": 0.01, "fold_scores": [0.31, 0.29, 0.33],
         "fold_accuracy": [0.9, 0.91, 0.89], "score": 0.31},
        {"features": "conv_pw_11_relu:average", "l2": 0.01, "fold_scores": [0.41, 0.39, 0.43],
         "fold_accuracy": [0.85, 0.86, 0.84], "score": 0.41},
        {"features": "conv_pw_9_relu+conv_pw_11_relu:symmetric", "l2": 0.03, "fold_scores": [0.28, 0.27, 0.3],
         "fold_accuracy": [0.91, 0.92, 0.9], "score": 0.28333},
    ],
    "chosen": {"features": "conv_pw_9_relu+conv_pw_11_relu:symmetric", "l2": 0.03},
    "seconds": 4.2,
}  # fmt: skip


def test_version_page_shows_the_choices_cross_validation_made(objects):  # noqa: F811
    ModelVersion.objects.filter(version="v0002").update(metrics={"accuracy": 0.93, "n": 100, "chosen_by_cv": RECORD})
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0002"])).content.decode()
    assert "Chosen by cross-validation" in html
    assert "3 folds of 540 training images" in html and "Features <code>" in html and " px</td>" not in html
    assert "0.41, 0.39, 0.43" in html and "0.28333" in html
    assert html.count("<code>conv_pw_9_relu+conv_pw_11_relu:symmetric</code>") == 3


def test_version_page_shows_the_input_size_among_the_choices(objects):  # noqa: F811
    candidates = [{**entry, "image_size": size} for size in (224, 128) for entry in RECORD["candidates"][:2]]
    sized = {
        **RECORD,
        "image_sizes": [224, 128],
        "candidates": candidates,
        "chosen": {**RECORD["chosen"], "image_size": 128},
    }
    ModelVersion.objects.filter(version="v0002").update(metrics={"accuracy": 0.93, "n": 100, "chosen_by_cv": sized})
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0002"])).content.decode()
    assert "Input size 128 px (of 224, 128), features" in html
    assert html.count("<td>224 px</td>") == 2 and html.count("<td>128 px</td>") == 2
    assert "kept over" not in html and "L2 values tried" not in html  # a first training, an older record


def test_version_page_shows_why_a_retrain_kept_its_size_and_the_l2_values_tried(objects):  # noqa: F811
    rule = {"kept": 224, "challenger": 128, "rule": "move if ...", "mean_difference": -0.0248}
    rule.update(standard_error=0.04157, moved=False)
    kept = {**RECORD, "image_sizes": [224, 128], "size_rule": rule, "l2_grid": [0.003, 0.01, 0.03, 0.09, 0.27]}
    kept["chosen"] = {**RECORD["chosen"], "image_size": 224}
    ModelVersion.objects.filter(version="v0002").update(metrics={"accuracy": 0.93, "n": 100, "chosen_by_cv": kept})
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0002"])).content.decode()
    assert "Input size 224 px kept over 128 px: mean per-fold loss difference -0.0248" in html
    assert "standard error 0.04157" in html
    assert "L2 values tried with the chosen features: 0.003, 0.01, 0.03, 0.09, 0.27" in html


def test_version_page_without_a_record_says_nothing_about_it(objects):  # noqa: F811
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0001"])).content.decode()
    assert "Chosen by cross-validation" not in html


def test_version_page_says_when_the_l2_was_chosen_after_the_features(objects):  # noqa: F811
    after = {**RECORD, "l2_chosen_after": True}
    metrics = {"accuracy": 0.93, "n": 100, "chosen_by_cv": after, "l2_search": {"0.01": 0.412, "0.1": 0.398}}
    ModelVersion.objects.filter(version="v0002").update(metrics=metrics)
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0002"])).content.decode()
    assert "at their best L2 0.03" in html
    assert "chosen by the out-of-fold search" in html and "0.01: 0.412, 0.1: 0.398" in html
    ModelVersion.objects.filter(version="v0002").update(metrics={"accuracy": 0.93, "n": 100, "chosen_by_cv": RECORD})
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0002"])).content.decode()
    assert "at their best L2" not in html and "out-of-fold search" not in html

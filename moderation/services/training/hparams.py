"""The hyper-parameters a platform retrain trains with.

Resolution order, each layer overriding the one before it:

1. `classifier.hparams.HParams()` defaults (what a first `python -m classifier train` uses without flags);
2. the active version's own recorded hyper-parameters (`Registry.hparams`), so a retrain keeps the image size,
   feature layers and head the serving model was trained with;
3. the platform's settings: the configured backbone (`VIGIA_BACKBONE`) and its weights file
   (`VIGIA_BACKBONE_WEIGHTS`, when set), and `PLATFORM_TRAINING_HPARAMS` below;
4. `VIGIA_TRAINING_HPARAMS` (JSON in the environment), an operator's last word, e.g. `{"epochs": 30}`.

The same resolution serves the retrain and the embedding of decided images ahead of it, so both ask the feature
cache for the same vectors.
"""

from dataclasses import replace

from django.conf import settings as django_settings

from moderation.models import ModelVersion
from moderation.services.model_versions import get_registry

#: Hyper-parameters every platform retrain uses whatever the active version was trained with (the first model
#: usually comes from the command line). Decisions carry inverse-propensity weights: a flagged image weighs 1,
#: an audit item 1 / the audit rate. Put into the loss, a few heavy audit items steer every feature weight and
#: retrains swing from one candidate to the next; with "bias" the head learns from the decisions as they are
#: and only its output biases are refit with the weights, which is what corrects the flagged images' skew
#: (docs/learning-loop.md has the measurements). The frozen holdout is what judges a candidate, so the test
#: split only feeds the version page's figures and a small holdout's extension: 10% of the examples, not the
#: command line's 30%, leaves more decisions to learn from. The biases are refit on out-of-fold scores (5 folds):
#: a head fits the audit items it trained on, so refit on its own training rows it kept the boundary too high
#: and missed prohibited images (measured in docs/learning-loop.md). The same folds choose the L2 strength from
#: `l2_grid` while a retrain has under 2,000 training images: decisions over-represent the hard negatives, and
#: cross-validation on them prefers more shrinkage than the classifier's default, which was chosen on random
#: photos. The five fold heads are then averaged into the final head (bagging): trained on a few hundred
#: decisions, one head's ranking and operating point swing between retrains, and the average swings less.
PLATFORM_TRAINING_HPARAMS = {
    "example_weighting": "bias",
    "bias_folds": 5,
    "l2_grid": (0.01, 0.03, 0.1),
    "average_fold_heads": True,
    "test_share": 0.1,
}


def hparams_for(*, active: ModelVersion | None):
    """The `HParams` of the next retrain given the active version (None before any model), in the order above."""
    from classifier.hparams import HParams
    from classifier.registry import RegistryError

    hparams = HParams()
    if active is not None:
        try:
            hparams = get_registry().hparams(active.version)
        except RegistryError:
            hparams = HParams()
    overrides = {"backbone": django_settings.VIGIA_BACKBONE, **PLATFORM_TRAINING_HPARAMS}
    if django_settings.VIGIA_BACKBONE_WEIGHTS:
        overrides["backbone_weights"] = django_settings.VIGIA_BACKBONE_WEIGHTS
    overrides.update(django_settings.VIGIA_TRAINING_HPARAMS)
    return replace(hparams, **overrides)

"""Decided images embedded into the shared feature cache as they are decided, ahead of the next retrain.

Embedding new images is most of a retrain's time. Done as each decision is recorded, on the training queue, it is
spent while moderators work instead of between the trigger and the promoted model. It is an optimisation only: an
image it missed (the broker was down, the task was lost) is embedded by the retrain itself.

Both embed with the active version's LiteRT feature extractor when it has one and computes the features the
next retrain asks for (`feature_extractor`); otherwise, or with `VIGIA_RUNTIME=keras`, with the Keras backbone.
"""

import os

from django.conf import settings as django_settings

from moderation import outbox
from moderation.models import ModelVersion, TrainingExample
from moderation.selectors.models import active_model
from moderation.selectors.training import to_classifier_examples_from_rows
from moderation.services.model_versions import get_registry
from moderation.services.training.hparams import hparams_for

# This process's extractor, by registry and version: one interpreter per process, built on first use.
_extractors: dict[tuple[str, str], object] = {}


def feature_extractor(*, active: ModelVersion | None):
    """The active version's LiteRT feature extractor (`classifier.embedding.FeatureExtractor`), or None.

    None means the Keras backbone embeds: no active version, `VIGIA_RUNTIME=keras`, or a version without a
    checked extractor file. The extractor uses `VIGIA_TF_THREADS` threads, every core by default, as training does.
    """
    if active is None or django_settings.VIGIA_RUNTIME == "keras":
        return None
    key = (str(django_settings.VIGIA_MODEL_REGISTRY), active.version)
    if key not in _extractors:
        from classifier.serving import load_feature_extractor

        threads = django_settings.VIGIA_TF_THREADS or os.cpu_count()
        _extractors.clear()
        _extractors[key] = load_feature_extractor(get_registry(), active.version, threads=threads)
    return _extractors[key]


def queue_embedding(*, example_ids: list[int]) -> None:
    """Queue the embedding of decided images on the training queue once the decision commits."""
    outbox.send_on_commit(outbox.EMBED_EXAMPLES, list(example_ids))


def embed_decision_examples(*, example_ids: list[int]) -> dict:
    """Put decided images' backbone features in the shared cache now, so the next retrain finds them there.

    The features are the ones the next retrain will ask for (`hparams_for` the active version). Training
    examples also get their mirror image's features when the stable split puts them in training; holdout images
    only ever get scored, by the gate. Rows that are gone, inactive or whose file is missing are skipped; an
    image the backbone cannot decode is left for the retrain to report.
    """
    from classifier.training import embed_examples

    rows = list(TrainingExample.objects.filter(id__in=example_ids, active=True))
    active = active_model()
    hparams = hparams_for(active=active)
    extractor = feature_extractor(active=active)
    report = {"embedded": 0, "cached": 0, "skipped": 0}
    for holdout in (False, True):
        examples = to_classifier_examples_from_rows(row for row in rows if row.is_holdout == holdout)
        result = embed_examples(
            examples,
            hparams,
            cache_dir=django_settings.VIGIA_FEATURE_CACHE,
            for_training=not holdout,
            backbone_cache=django_settings.VIGIA_BACKBONE_CACHE,
            extractor=extractor,
        )
        report["embedded"] += result.embedded
        report["cached"] += result.cached
        report["skipped"] += len(result.skipped)
    return report

"""Model versions: mirror the classifier's registry, and activate (promote or roll back) a version.

The registry's `active` file is what scoring workers watch; `ModelVersion.is_active` is what pages and audits join
on. Activation changes both in one call: the rows inside a transaction, the pointer (an atomic rename) as its last
step, so a failed pointer write rolls the rows back. Once committed, open images are re-scored with the new model.
Every activation recalibrates the thresholds for the version it makes active (`services.calibration`), in the same
transaction, so the thresholds in force always belong to the model that serves.
"""

import logging

from django.conf import settings as django_settings
from django.db import transaction

from moderation import clock
from moderation.models import AuditAction, ModelVersion, TrainingRun
from moderation.services import audit
from moderation.services.calibration import recalibrate

logger = logging.getLogger(__name__)


class UnknownModelVersion(LookupError):
    """No version of that name in the registry."""


def get_registry():
    """The classifier's registry at `VIGIA_MODEL_REGISTRY`, shared by the desk, its workers and the CLI."""
    from classifier.registry import Registry

    return Registry(django_settings.VIGIA_MODEL_REGISTRY)


def _rescore_open_images() -> None:
    from moderation.services.queueing import rescore_open_images

    queued = rescore_open_images()
    logger.info("queued %s open images for re-scoring with the new model", queued)


def mirror_version(*, info, training_run: TrainingRun | None = None) -> ModelVersion:
    """Create or update the row of one registry version (`classifier.registry.VersionInfo`).

    The version's `allowed_label` metadata, when it has one, is mirrored too: it is what a rejection teaches.
    """
    defaults = {"labels": list(info.labels), "prohibited_labels": list(info.prohibited), "metrics": info.metrics or {}}
    defaults["allowed_label"] = _allowed_label(info.version)
    if training_run is not None:
        defaults["training_run"] = training_run
    version, _ = ModelVersion.objects.update_or_create(version=info.version, defaults=defaults)
    return version


def _allowed_label(version: str) -> str:
    from classifier.registry import RegistryError

    try:
        value = get_registry().metadata(version).get("allowed_label")
    except RegistryError:
        return ""
    return value if isinstance(value, str) else ""


def sync_models() -> dict:
    """Mirror every registry version into ModelVersion and make `is_active` agree with the registry pointer.

    The pointer wins: it is what workers serve, so after a crash between the two writes this puts the rows back
    in line with reality. A pointer moved outside the desk (`python -m classifier train --activate`) is an
    activation too: the thresholds are recalibrated for the version it names.
    """
    registry = get_registry()
    infos = registry.versions()
    for info in infos:
        mirror_version(info=info)
    active = registry.active_version()
    with transaction.atomic():
        ModelVersion.objects.filter(is_active=True).exclude(version=active or "").update(is_active=False)
        if active:
            moved = ModelVersion.objects.filter(version=active, is_active=False).update(
                is_active=True, activated_at=clock.now()
            )
            if moved:
                recalibrate(version=active, reason="The registry's active pointer named it (sync_models).")
    return {"versions": len(infos), "active": active}


def activate_version(*, version: str, rescore: bool = True, note: str = "") -> ModelVersion:
    """Make `version` the one every worker serves (promotion and rollback alike), and audit it.

    Call inside or outside a transaction; re-scoring of open images is queued only after the commit, so it
    never runs against a version the database does not (yet) call active. Going back to the version active
    before the current one is recorded as a rollback.
    """
    registry = get_registry()
    with transaction.atomic():
        current = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        earlier = previous_version()
        target = ModelVersion.objects.select_for_update().filter(version=version).first()
        if target is None:
            info = next((item for item in registry.versions() if item.version == version), None)
            if info is None:
                raise UnknownModelVersion(f"no model version {version!r} in the registry")
            target = mirror_version(info=info)
            target = ModelVersion.objects.select_for_update().get(pk=target.pk)
        ModelVersion.objects.filter(is_active=True).exclude(pk=target.pk).update(is_active=False)
        target.is_active = True
        target.activated_at = clock.now()
        target.save(update_fields=["is_active", "activated_at"])
        registry.activate(version)
        rollback = earlier is not None and earlier.pk == target.pk
        audit.record(
            action=AuditAction.MODEL_ROLLED_BACK if rollback else AuditAction.MODEL_ACTIVATED,
            obj=target,
            before={"active": current},
            after={"active": version},
            note=note,
        )
        recalibrate(
            version=version,
            replaced=current,
            reason=("Rolled back" if rollback else "Activated") + (f": {note}" if note else "."),
        )
        if rescore:
            transaction.on_commit(_rescore_open_images)
    return target


def previous_version() -> ModelVersion | None:
    """The version active before the current one, for a one-click rollback."""
    current = ModelVersion.objects.filter(is_active=True).first()
    earlier = ModelVersion.objects.filter(activated_at__isnull=False)
    if current is not None:
        earlier = earlier.exclude(pk=current.pk)
    return earlier.order_by("-activated_at").first()

"""Training pages for admins: runs with live progress, model versions with their evidence, activate/rollback.

Views stay thin: they read through `selectors.training` and change state through one service call each.
"""

import mimetypes

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from moderation.models import OPEN_RUN_STATUSES, ModelVersion, TrainingRun, TrainingTrigger
from moderation.permissions import admin_required, recent_login_required
from moderation.selectors import training as selectors
from moderation.selectors.serving import serving_report
from moderation.services import model_versions
from moderation.services.training.trigger import request_training

# Only these registry files are served: the plots a version page shows.
VERSION_FILES = {"curves.png", "confusion.png"}


@admin_required
@require_GET
def runs_view(request):
    """Show admins the training runs, with live progress, and how far the batch-size trigger is from firing."""
    runs = list(selectors.list_training_runs())
    return render(
        request,
        "moderation/training/runs.html",
        {"runs": runs, "trigger": selectors.trigger_status(), "open_statuses": OPEN_RUN_STATUSES},
    )


@admin_required
@require_POST
def retrain_now_view(request):
    """Let an admin queue a retrain now ("Retrain now"); a run already queued is reused, not doubled."""
    run = request_training(trigger=TrainingTrigger.MANUAL, user=request.user)
    if run.requested_by_id == request.user.pk and run.trigger == TrainingTrigger.MANUAL:
        messages.success(request, f"Training run {run.pk} is queued.")
    else:
        messages.info(request, f"Run {run.pk} is already queued; it will train on everything new.")
    return redirect("training-runs")


@admin_required
@require_GET
def run_detail_view(request, pk: int):
    """Show an admin one run: its progress, metrics, the gate's verdict and the version it produced."""
    run = get_object_or_404(TrainingRun.objects.select_related("requested_by"), pk=pk)
    version = ModelVersion.objects.filter(version=run.model_version).first() if run.model_version else None
    return render(
        request,
        "moderation/training/run_detail.html",
        {"run": run, "version": version, "progress": selectors.run_progress(run), "gate": run.gate or {}},
    )


@admin_required
@require_GET
def run_status_view(request, pk: int):
    """Answer the runs page's poll for one run's live progress, as JSON (admins only)."""
    run = get_object_or_404(TrainingRun, pk=pk)
    data = selectors.run_progress(run)
    data["open"] = run.status in OPEN_RUN_STATUSES
    return JsonResponse(data)


@admin_required
@require_GET
def versions_view(request):
    """Show admins every model version, the one a rollback returns to, and what each scoring process serves."""
    return render(
        request,
        "moderation/training/versions.html",
        {
            "versions": selectors.list_model_versions(),
            "previous": model_versions.previous_version(),
            "serving": serving_report(),
        },
    )


@admin_required
@require_GET
def version_detail_view(request, version: str):
    """Show an admin one model version: its metrics, the gate's evidence and the decisions it learned from."""
    model_version = get_object_or_404(ModelVersion.objects.select_related("training_run"), version=version)
    run = model_version.training_run
    lineage = selectors.examples_that_trained(model_version).order_by("-id")
    page = Paginator(lineage, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "moderation/training/version_detail.html",
        {
            "version": model_version,
            "run": run,
            "gate": (run.gate if run else {}) or {},
            "lineage_page": page,
            "lineage_count": page.paginator.count,
            "metrics": model_version.metrics or {},
            "runtime": selectors.version_runtime(version=model_version.version),
        },
    )


@admin_required
@recent_login_required
@require_POST
def activate_view(request, version: str):
    """Let an admin activate a version (promote or roll back); scoring workers switch to it within seconds."""
    from classifier.registry import RegistryError

    get_object_or_404(ModelVersion, version=version)
    try:
        model_versions.activate_version(version=version)
    except (RegistryError, model_versions.UnknownModelVersion) as exc:
        # The row exists but the registry refuses (files missing or damaged): nothing was switched.
        messages.error(request, f"{version} could not be activated: {exc}")
    else:
        messages.success(request, f"{version} is now active; workers switch to it within seconds.")
    return redirect("model-versions")


@admin_required
@require_GET
def version_file_view(request, version: str, name: str):
    """Serve admins a version's plots from its registry directory (names from a fixed list: no path from the URL)."""
    if name not in VERSION_FILES:
        raise Http404("no such file")
    get_object_or_404(ModelVersion, version=version)
    path = model_versions.get_registry().path(version) / name
    if not path.is_file():
        raise Http404("no such file")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path.open("rb"), content_type=content_type)

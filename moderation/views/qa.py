"""The QA queue: automated takedowns drawn at the QA rate, for a moderator to confirm or overturn.

Its verdicts are how the desk knows the auto-action precision rather than assuming it (the settings page shows
the measured figure); an overturn puts the photo back up.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from moderation.models import DecisionOutcome
from moderation.permissions import moderator_required
from moderation.selectors.calibration import qa_queue
from moderation.services import auto_action


@require_GET
@moderator_required
def qa_queue_view(request):
    """List the automated takedowns waiting for a QA verdict, oldest first."""
    return render(request, "moderation/qa.html", {"items": qa_queue()})


@require_POST
@moderator_required
def qa_verdict_view(request, pk: int):
    """Confirm or overturn one automated takedown; a second verdict on it stores nothing (409)."""
    outcome = request.POST.get("outcome", "")
    if outcome not in DecisionOutcome.values:
        context = {"title": "Invalid verdict", "errors": {"outcome": ["Confirm or reject."]}}
        return render(request, "moderation/conflict.html", context, status=400)
    try:
        auto_action.qa_verdict(user=request.user, decision_id=pk, outcome=outcome, note=request.POST.get("note", ""))
    except auto_action.QAError as exc:
        context = {"title": "No QA verdict to give", "detail": str(exc), "code": exc.code}
        return render(request, "moderation/conflict.html", context, status=409)
    verb = "Confirmed" if outcome == DecisionOutcome.CONFIRM else "Overturned (the photo is back up)"
    messages.success(request, f"{verb}: automated decision {pk}.")
    return redirect("qa-queue")

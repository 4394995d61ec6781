"""Desk pages for appeals and the moderator's record.

The Appeals queue and an appeal's page are open to moderators and admins; only those who made none of the
contested decisions see the Uphold / Overturn buttons, and the service refuses anyone else's POST (403). A second
decision of the same appeal answers 409, like a double submit in the review queue. The moderator record, which
counts each moderator's corrections, is for admins.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from moderation.forms import AppealDecisionForm
from moderation.models import Appeal, AppealStatus
from moderation.permissions import admin_required, moderator_required
from moderation.selectors import appeals as selectors
from moderation.services import appeals as service

#: What a refused decision answers; anything else (already decided) is a 409.
REFUSAL_STATUS = {service.NotAllowedToDecide.code: 403, service.InvalidAppeal.code: 400}


def _refusal(appeal: Appeal, user) -> str:
    """Why `user` may not decide `appeal` ("" when they may)."""
    try:
        service.check_may_decide(user=user, contested=appeal.contested.all())
    except service.NotAllowedToDecide as refused:
        return str(refused)
    return ""


@require_GET
@moderator_required
def appeals_view(request):
    """The open appeals, oldest first, with each one's text and contested photos and who decided them."""
    after = request.GET.get("after", "")
    page = selectors.open_appeals_page(int(after) if after.isdigit() else None)
    rows = [(appeal, _refusal(appeal, request.user)) for appeal in page.appeals]
    return render(request, "moderation/appeals.html", {"page": page, "rows": rows, "first_page": not after})


def _appeal_page(request, appeal: Appeal, form: AppealDecisionForm, status: int = 200):
    refusal = _refusal(appeal, request.user)
    context = {
        "appeal": appeal,
        "form": form,
        "refusal": refusal,
        "can_decide": appeal.status == AppealStatus.OPEN and not refusal,
    }
    return render(request, "moderation/appeal_detail.html", context, status=status)


def _get_appeal(pk: int) -> Appeal:
    try:
        return selectors.appeal_detail(pk)
    except Appeal.DoesNotExist as exc:
        raise Http404("No such appeal.") from exc


@require_GET
@moderator_required
def appeal_view(request, pk: int):
    """One appeal: the seller's text, the contested decisions and, for a moderator who may, Uphold / Overturn."""
    return _appeal_page(request, _get_appeal(pk), AppealDecisionForm())


@require_POST
@moderator_required
def decide_view(request, pk: int):
    """Uphold or overturn an appeal; 403 for a moderator who made a contested decision, 409 once it is decided."""
    appeal = _get_appeal(pk)
    form = AppealDecisionForm(request.POST)
    if not form.is_valid():
        return _appeal_page(request, appeal, form, status=400)
    try:
        decided = service.decide_appeal(
            appeal_id=pk, user=request.user, outcome=form.cleaned_data["outcome"], note=form.cleaned_data["note"]
        )
    except service.AppealError as exc:
        status = REFUSAL_STATUS.get(exc.code, 409)
        title = "Not yours to decide" if status == 403 else "This appeal cannot be decided"
        context = {"title": title, "detail": str(exc), "code": exc.code, "appeal": pk}
        return render(request, "moderation/conflict.html", context, status=status)
    messages.success(request, f"Appeal {decided.pk} {decided.get_status_display().lower()}.")
    return redirect("appeals")


@require_GET
@admin_required
def moderators_view(request):
    """Per moderator: decisions made, confirmations, rejections, undone, overturned on appeal, correction rate."""
    return render(request, "moderation/moderators.html", {"records": selectors.moderator_records()})

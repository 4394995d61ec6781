"""The Audit page for admins: the append-only trail, filtered, and exported as CSV; and the decisions export with
the fields of a DSA statement of reasons.

The statement-of-reasons columns say, per decision: whether the image was found by automated means (the model
flagged it; an audit sample was picked at random instead), whether the decision itself was automated (a bank
match's take-down and the model's auto-action are; a moderator's never is), the policy ground, and the time from
upload to the action.
"""

import csv

from django import forms
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from moderation.models import AuditAction
from moderation.permissions import admin_required
from moderation.selectors.audit_trail import AuditFilter, audit_entries, statements_of_reasons

AUDIT_COLUMNS = ("at", "actor", "action", "object_type", "object_id", "before", "after", "note", "request_id", "ip")
DECISION_COLUMNS = (
    "decision_id",
    "decided_at",
    "client",
    "external_id",
    "listing_id",
    "image_id",
    "outcome",
    "policy_ground",
    "automated_detection",
    "automated_decision",
    "seconds_from_upload_to_action",
    "moderator",
    "undone_at",
    "overturned_at",
    "via_appeal",
)


class AuditFilterForm(forms.Form):
    """The Audit page's filters (GET parameters)."""

    action = forms.ChoiceField(choices=[("", "any action"), *AuditAction.choices], required=False)
    actor = forms.CharField(max_length=150, required=False)
    object_type = forms.CharField(max_length=40, required=False)
    object_id = forms.CharField(max_length=100, required=False)
    since = forms.DateTimeField(required=False, help_text="From (inclusive), e.g. 2026-12-01 08:00")
    until = forms.DateTimeField(required=False, help_text="To (exclusive)")

    def filters(self) -> AuditFilter:
        """The filters of a valid form (all empty for an invalid one)."""
        return AuditFilter(**self.cleaned_data) if self.is_valid() else AuditFilter()


class _Echo:
    """A file-like object whose `write` returns what it got: csv.writer then yields lines to stream."""

    def write(self, value):
        """Hand the formatted line back instead of storing it."""
        return value


def _csv_response(name: str, header, rows) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    lines = (writer.writerow(row) for row in _prepend(header, rows))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _prepend(first, rest):
    yield first
    yield from rest


@admin_required
@require_GET
def audit_view(request):
    """Show admins the audit trail, newest first, filtered by action, actor, object and time."""
    form = AuditFilterForm(request.GET or None)
    page = Paginator(audit_entries(form.filters()), 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "moderation/audit.html", {"form": form, "page": page, "query": query.urlencode()})


@admin_required
@require_GET
def audit_export_view(request):
    """The filtered audit trail as CSV (streamed: any number of rows in bounded memory)."""
    entries = audit_entries(AuditFilterForm(request.GET or None).filters()).iterator(chunk_size=2000)
    rows = (
        (
            entry.at.isoformat(),
            entry.actor_name,
            entry.action,
            entry.object_type,
            entry.object_id,
            entry.before,
            entry.after,
            entry.note,
            entry.request_id,
            entry.ip or "",
        )
        for entry in entries
    )
    return _csv_response("audit.csv", AUDIT_COLUMNS, rows)


@admin_required
@require_GET
def decisions_export_view(request):
    """Every decision in the period as CSV with the fields of a DSA statement of reasons."""
    form = AuditFilterForm(request.GET or None)
    filters = form.filters()
    decisions = statements_of_reasons(filters.since, filters.until).iterator(chunk_size=2000)
    rows = (_statement(decision) for decision in decisions)
    return _csv_response("statements-of-reasons.csv", DECISION_COLUMNS, rows)


def _statement(decision) -> tuple:
    image = decision.image
    listing = image.listing
    return (
        decision.pk,
        decision.created_at.isoformat(),
        listing.client.name,
        listing.external_id,
        listing.pk,
        image.pk,
        decision.outcome,
        decision.policy_category,
        "no" if decision.was_audit else "yes",
        "yes" if decision.automated else "no",
        round((decision.created_at - image.created_at).total_seconds(), 1),
        decision.decided_by,
        decision.undone_at.isoformat() if decision.undone_at else "",
        decision.overturned_at.isoformat() if decision.overturned_at else "",
        "yes" if decision.appeal_id else "no",
    )

"""URLs of the audit area (mounted at /audit/): the trail and the exports. Admins only."""

from django.urls import path

from moderation.views import audit

urlpatterns = [
    path("", audit.audit_view, name="audit"),
    path("export.csv", audit.audit_export_view, name="audit-export"),
    path("decisions.csv", audit.decisions_export_view, name="decisions-export"),
]

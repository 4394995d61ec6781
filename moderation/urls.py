"""URL map. Every URL here must appear in the permission matrix test (tests/moderation/test_permissions.py)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("moderation.urls_api")),
    path("", include("moderation.urls_review")),
    path("", include("moderation.urls_appeals")),
    path("", include("moderation.urls_attention")),
    path("training/", include("moderation.urls_training")),
    path("clients/", include("moderation.urls_clients")),
    path("banks/", include("moderation.urls_banks")),
    path("audit/", include("moderation.urls_audit")),
    path("webhooks/", include("moderation.urls_webhooks")),
]

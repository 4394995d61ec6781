"""URLs of the api area. The last pattern answers every unknown /api/ path with a JSON 404."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from moderation import api

urlpatterns = [
    path("v1/listings", api.ListingCreateView.as_view(), name="api-listings"),
    path("v1/listings/<int:listing_id>", api.ListingDetailView.as_view(), name="api-listing-detail"),
    path("v1/score", api.ScoreView.as_view(), name="api-score"),
    path("v1/health", api.HealthView.as_view(), name="api-health"),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^.*$", api.not_found, name="api-not-found"),
]

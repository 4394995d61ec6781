"""URLs of the api area. The last pattern answers every unknown /api/ path with a JSON 404."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from moderation.api import appeals, errors, events, health, listings, scoring

urlpatterns = [
    path("v1/listings", listings.ListingCollectionView.as_view(), name="api-listings"),
    path("v1/listings/<int:listing_id>", listings.ListingDetailView.as_view(), name="api-listing-detail"),
    path("v1/listings/<int:listing_id>/images", listings.ListingImagesView.as_view(), name="api-listing-images"),
    path("v1/listings/<int:listing_id>/appeals", appeals.ListingAppealsView.as_view(), name="api-listing-appeals"),
    path("v1/events", events.EventFeedView.as_view(), name="api-events"),
    path("v1/score", scoring.ScoreView.as_view(), name="api-score"),
    path("v1/health", health.HealthView.as_view(), name="api-health"),
    path("v1/health/live", health.LiveView.as_view(), name="api-health-live"),
    path("v1/health/ready", health.ReadyView.as_view(), name="api-health-ready"),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^.*$", errors.not_found, name="api-not-found"),
]

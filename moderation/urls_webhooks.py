"""URLs of the webhooks area (mounted at /webhooks/): endpoints, their delivery logs and actions. Admins only."""

from django.urls import path

from moderation.views import webhooks

urlpatterns = [
    path("", webhooks.endpoints_view, name="webhooks"),
    path("add/", webhooks.add_endpoint_view, name="webhook-add"),
    path("<int:pk>/", webhooks.endpoint_view, name="webhook-endpoint"),
    path("<int:pk>/rotate/", webhooks.rotate_secret_view, name="webhook-rotate"),
    path("<int:pk>/disable/", webhooks.disable_view, name="webhook-disable"),
    path("<int:pk>/enable/", webhooks.enable_view, name="webhook-enable"),
    path("<int:pk>/test/", webhooks.send_test_view, name="webhook-test"),
    path("deliveries/<int:pk>/replay/", webhooks.replay_view, name="webhook-replay"),
]

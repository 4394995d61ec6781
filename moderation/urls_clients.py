"""URLs of the clients area (mounted at /clients/): the marketplaces and their API keys. Admins; keys: superusers."""

from django.urls import path

from moderation.views import clients

urlpatterns = [
    path("", clients.clients_view, name="clients"),
    path("<int:pk>/", clients.client_detail_view, name="client-detail"),
    path("<int:pk>/toggle/", clients.client_toggle_view, name="client-toggle"),
    path("<int:pk>/keys/", clients.key_create_view, name="client-key-create"),
    path("<int:pk>/keys/<str:prefix>/revoke/", clients.key_revoke_view, name="client-key-revoke"),
]

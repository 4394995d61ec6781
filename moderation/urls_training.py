"""URLs of the training area (mounted at /training/): runs, model versions and the admin's settings. Admins only."""

from django.urls import path

from moderation.views import admin_settings, training

urlpatterns = [
    path("", training.runs_view, name="training-runs"),
    path("retrain/", training.retrain_now_view, name="retrain-now"),
    path("runs/<int:pk>/", training.run_detail_view, name="training-run-detail"),
    path("runs/<int:pk>/status/", training.run_status_view, name="training-run-status"),
    path("models/", training.versions_view, name="model-versions"),
    path("models/<str:version>/", training.version_detail_view, name="model-version-detail"),
    path("models/<str:version>/activate/", training.activate_view, name="model-version-activate"),
    path(
        "models/<str:version>/<str:name>",
        training.version_file_view,
        name="model-version-file",
    ),
    path("settings/", admin_settings.settings_view, name="moderation-settings"),
]

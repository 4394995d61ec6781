"""URLs of the training area."""

urlpatterns = []

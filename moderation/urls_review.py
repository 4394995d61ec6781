"""URLs of the review area."""

urlpatterns = []

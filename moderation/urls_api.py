"""URLs of the api area."""

urlpatterns = []

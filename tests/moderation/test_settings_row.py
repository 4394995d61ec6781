import pytest

from moderation.selectors.settings import get_settings


@pytest.mark.django_db
def test_settings_row_is_created_with_defaults_once():
    first = get_settings()
    first.default_threshold = 0.7
    first.save()
    again = get_settings()
    assert again.pk == first.pk == 1
    assert again.threshold_for("anything") == 0.7

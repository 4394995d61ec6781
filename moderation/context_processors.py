"""What every desk page's navigation needs: how many images wait for a moderator's attention.

Only for moderators (others do not see the link), and only counted when a template reads it, so a page that
never shows the navigation pays nothing.
"""

from django.utils.functional import SimpleLazyObject

from moderation.permissions import is_moderator
from moderation.selectors.attention import failed_count


def desk(request) -> dict:
    """`needs_attention_count` (lazy) for moderators and admins; nothing for anyone else."""
    user = getattr(request, "user", None)
    if user is None or not is_moderator(user):
        return {}
    return {"needs_attention_count": SimpleLazyObject(failed_count)}

"""Django admin for every model: an operator's view of raw state, for support and audits.

One module a concern: `pipeline` (listings, images, scores, decisions, training, settings) and `clients` (clients,
keys, events, the outbox). Django finds the admin through this package's imports.
"""

from moderation.admin import clients, pipeline  # noqa: F401 - importing registers the model admins

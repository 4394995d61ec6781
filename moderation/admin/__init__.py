"""Django admin for every model: an operator's view of raw state, for support and audits.

One module a concern: `pipeline` (listings, images, scores, decisions, training, settings), `clients` (clients,
keys, events, the outbox), `webhooks` (endpoints, deliveries), `accounts` (users and groups, audited), `audit`
and `banks` (hash banks, read-only). Django finds them through this package's imports.
"""

from moderation.admin import accounts, audit, banks, clients, pipeline, webhooks  # noqa: F401 - importing registers

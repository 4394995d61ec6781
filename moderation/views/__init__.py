"""HTTP in: browser pages (review queue, admin pages, training). The REST API lives in `moderation.api`."""

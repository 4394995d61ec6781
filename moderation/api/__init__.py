"""The REST API a marketplace talks to: send listings (safely retried), read their fate, add photos, withdraw,
appeal, follow events, score one photo, check health.

One module a concern: `authentication` (client keys), `errors` (the one error shape), `listings`, `events`,
`appeals`, `scoring` (score one photo), `health` (live, ready, the full report) and `serializers` (the API's
shapes and OpenAPI components).
"""

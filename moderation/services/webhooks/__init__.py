"""Webhook delivery on the Standard Webhooks spec, one module a concern.

- `addresses`: where a webhook may go (https, public addresses), checked when an endpoint is saved and again, after
  resolving its host, when each request is sent;
- `sending`: one POST to the checked address, with a time limit and no redirects;
- `signing`: the body and the `webhook-*` headers, signed with every valid secret of the endpoint;
- `delivery`: an endpoint's due deliveries sent in order, retried with backoff, every attempt logged;
- `dispatch`: what beat runs: due retries handed to the `webhooks` queue, endpoints failing too long disabled;
- `endpoints`: what admins do: add an endpoint, rotate its secret, disable, enable, replay, send a test event.
"""

"""Webhooks of state changes, delivered from a durable outbox.

- `compose`: a state change becomes an outbox event, written by the store in the change's own
  transaction (so a committed change always has its event, and a restart loses none).
- `delivery`: the leader's loop that POSTs what is due, retries with backoff up to a horizon, and logs
  every attempt (at-least-once: receivers dedupe by `webhook-id`).
- `signing`: the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
"""

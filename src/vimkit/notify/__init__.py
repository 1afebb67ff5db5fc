"""Subscriptions and at-least-once, in-order delivery of notifications from the outbox."""

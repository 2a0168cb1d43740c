"""Webhooks: task events POSTed to users' endpoints, signed to Standard Webhooks 1.0.

The dispatcher runs inside every processor (TASKGATE_WEBHOOK_DISPATCHER) and
alone as ``python -m server.webhooks``.
"""

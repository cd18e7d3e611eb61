"""Fynd Invoice Relay: ERP invoice webhooks in, Fynd Konnect Update Invoice calls out, exactly once."""

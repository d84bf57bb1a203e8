"""Spend: budget periods, the admission gate (limits and budget reservations) and the ledger."""

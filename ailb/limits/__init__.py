"""Rate limits: token buckets over injected time (pure)."""

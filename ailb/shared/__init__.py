"""State every AILB instance shares through Redis or Valkey (``REDIS_URL``): rate-limit
counters, deployment cooldowns and the response cache. ``redis`` is the only module that
imports coredis; ``open`` builds the rest from the settings."""

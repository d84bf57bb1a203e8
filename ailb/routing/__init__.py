"""Which deployment serves a request: the route table, strategies, and the router."""

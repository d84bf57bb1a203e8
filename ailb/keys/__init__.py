"""Who is calling: credentials, and (later) virtual keys with their limits and budgets."""

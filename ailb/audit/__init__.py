"""The audit log: who changed what, when, through which door (see :mod:`ailb.audit.entry` for
the values and the rule that no secret is ever recorded, :mod:`ailb.audit.log` for writing and
reading it through the store)."""

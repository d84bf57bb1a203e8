"""Team rules, stated once. Pure.

* A key may belong to a team (its ``team`` field names a team id). A team's limits and budget
  apply on top of the key's: every request of its keys counts against the team's RPM, TPM,
  parallel requests and budget, as a second *subject* beside the key, with the key's own
  machinery (state in the gate, reservation in the store, shared counters), under the subject
  id ``team:<id>`` (key ids never hold a colon: see :mod:`ailb.keys.records`).
* Admission takes the key, then the team; when the team refuses, what the key took is given
  back. Settling settles both, with the same actual cost.
* A key whose ``team`` names no team record (a key declared in the YAML may name any team)
  has no team limits; its ledger rows still carry the name, for reports.
* A team's refusal says so: codes ``team_budget_exceeded`` (402) and
  ``team_rate_limit_exceeded`` (429, with its Retry-After), and messages that name the team.
"""

from __future__ import annotations

from typing import Final

from ailb.accounting.reservations import KeyLimits
from ailb.errors import BudgetExceeded, GatewayError, RateLimited
from ailb.keys.records import TeamRecord

PREFIX: Final = "team:"


def subject(team_id: str) -> str:
    """The id a team's spend, reservations and counters are kept under."""
    return f"{PREFIX}{team_id}"


def limits_of(team: TeamRecord) -> KeyLimits:
    return KeyLimits(team.rpm_limit, team.tpm_limit, team.max_parallel_requests,
                     team.monthly_budget_usd)


def _reworded(message: str, team_id: str) -> str:
    named = f"Team `{team_id}`"
    return (message.replace("This key's", f"{named}'s").replace("this key's", f"{named}'s")
            .replace("This key", named).replace("the key's", f"{named}'s"))


def team_error(exc: GatewayError, team_id: str) -> GatewayError:
    """A refusal of the team's limits as the client hears it (other errors as they are)."""
    out: GatewayError
    if isinstance(exc, BudgetExceeded):
        out = BudgetExceeded(_reworded(exc.message, team_id), code="team_budget_exceeded")
    elif isinstance(exc, RateLimited):
        out = RateLimited(_reworded(exc.message, team_id), code="team_rate_limit_exceeded",
                          retry_after_s=exc.retry_after_s)
    else:
        return exc
    # the team's buckets are not the key's: only whether to retry is told
    out.headers = {k: v for k, v in exc.headers.items() if k == "x-should-retry"}
    return out

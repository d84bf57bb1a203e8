"""The console script's pages: deployments, keys, teams, spend, recent requests, audit and
configuration, each a function that fills the page from the admin API; then the start."""

from __future__ import annotations

from typing import Final

JS: Final = r"""
function heading(text) { return el("h1", {}, [text]); }
function stateCell(state) { return el("span", {class: "state-" + state}, [state]); }

C.pages.overview = async host => {
  // drawn once; each refresh updates the summary and the tables' rows in place, and says in
  // the status line only what changed (a deployment's health or routing state)
  const summary = el("p");
  const deployments = liveTable("Deployments", [
    ["Deployment", r => r.name], ["Provider", r => r.provider],
    ["Health", r => stateCell(r.health)], ["Routing", r => stateCell(r.state)],
    ["Cooling until", r => r.cooling_down_until], ["Reason", r => r.cooldown_reason],
    ["Requests", r => r.requests, 1],
    ["Traffic share", r => r.share.toFixed(1) + " %", 1],
    ["Failures", r => r.failures, 1], ["In flight", r => r.in_flight, 1],
    ["p50 ms", r => r.latency_ms.p50, 1], ["p95 ms", r => r.latency_ms.p95, 1],
    ["Probe ms", r => r.probe_ms, 1]]);
  let weights = {};
  const models = liveTable("Models", [["Model", r => r[0]], ["Strategy", r => r[1]],
    ["Traffic weights", r => Object.entries(weights[r[0]] || {})
      .map(([d, w]) => `${d}: ${w}`).join(", ")]]);
  let before = null;
  const draw = async () => {
    const [health, stats] = await Promise.all([api("GET", "/healthz"),
      api("GET", "/api/routing/stats")]);
    const rows = Object.entries(stats.deployments).map(([name, d]) => ({name, ...d,
      health: (health.providers[name] || {}).state || "unknown",
      probe_ms: (health.providers[name] || {}).latency_ms}));
    const total = rows.reduce((n, r) => n + r.requests, 0) || 1;
    for (const r of rows) r.share = 100 * r.requests / total;
    summary.replaceChildren("Gateway ", stateCell(health.status),
      ` \u2014 version ${health.version}, module ${health.module_id}, configuration ` +
      `generation ${health.config.generation}`, health.draining ? " (draining)" : "");
    weights = stats.weights || {};
    deployments.update(rows);
    models.update(Object.entries(stats.models));
    const now = new Map(rows.map(r => [r.name, `health ${r.health}, routing ${r.state}`]));
    if (before) {
      const changed = rows.filter(r => before.get(r.name) !== now.get(r.name))
        .map(r => `${r.name}: ${now.get(r.name)}`);
      if (changed.length) say("Changed: " + changed.join("; "));
    }
    before = now;
  };
  await draw();
  host.replaceChildren(heading("Deployments"), summary,
    el("p", {}, ["Refreshed every 3 seconds. ", autoRefresh(3, draw)]),
    deployments.node, models.node);
};

const KEY_FIELDS = [["team", "Team"], ["rpm_limit", "RPM limit", "number"],
  ["tpm_limit", "TPM limit", "number"], ["max_parallel_requests", "Parallel requests", "number"],
  ["monthly_budget_usd", "Monthly budget (USD)", "number"]];
function keyBody(raw) {
  const body = {};
  for (const [n, , t] of KEY_FIELDS) {
    if (!(n in raw)) continue;
    body[n] = t === "number" ? numberOrNull(raw[n]) : raw[n];
  }
  if (raw.name !== undefined) body.name = raw.name;
  return body;
}
C.pages.keys = async host => {
  // this month's requests and spend per key, from the ledger (the spend report's default range)
  const [list, spend] = await Promise.all([api("GET", "/admin/keys"),
    api("GET", "/admin/spend?group_by=key")]);
  const used = new Map(spend.data.map(r => [r.key_id, r]));
  const usage = (k, field) => (used.get(k.id) || {})[field] || 0;
  const act = (label, fn, cls, what) => el("button", {type: "button", class: cls,
    "aria-label": what ? label + " " + what : null,
    on: {click: () => fn().catch(e => say(e.message, true))}}, [label]);
  const edit = k => async () => {
    const raw = await formDialog("Edit key " + k.id,
      [["name", "Name", "text", k.name], ...KEY_FIELDS.map(([n, l, t]) => [n, l, t, k[n]])]);
    if (!raw) return;
    const body = keyBody(raw);  // an emptied team is sent as "": the key leaves its team
    await api("PATCH", "/admin/keys/" + encodeURIComponent(k.id), body);
    say("Key " + k.id + " saved."); route();
  };
  const rotate = k => async () => {
    if (!confirm("Rotate " + k.id + "? The old secret stops working at once.")) return;
    const made = await api("POST", "/admin/keys/" + encodeURIComponent(k.id) + "/rotate");
    showSecret(made.key); say("Key " + k.id + " rotated."); route();
  };
  const revoke = k => async () => {
    if (!confirm("Revoke " + k.id + "?")) return;
    await api("DELETE", "/admin/keys/" + encodeURIComponent(k.id));
    say("Key " + k.id + " revoked."); route();
  };
  const reactivate = k => async () => {
    await api("PATCH", "/admin/keys/" + encodeURIComponent(k.id), {active: true});
    say("Key " + k.id + " reactivated."); route();
  };
  const create = async () => {
    const raw = await formDialog("New key", [["name", "Name", "text", ""],
      ...KEY_FIELDS.map(([n, l, t]) => [n, l, t, ""])]);
    if (!raw) return;
    const body = keyBody(raw);
    if (!body.team) delete body.team;
    const made = await api("POST", "/admin/keys", body);
    say("Key " + made.id + " created."); showSecret(made.key); route();
  };
  host.replaceChildren(heading("Keys"), act("New key", create, "primary"),
    table("Virtual keys", [["Id", k => k.id], ["Name", k => k.name], ["Team", k => k.team],
      ["Active", k => k.active ? "yes" : "revoked"], ["RPM", k => k.rpm_limit, 1],
      ["TPM", k => k.tpm_limit, 1], ["Parallel", k => k.max_parallel_requests, 1],
      ["Budget USD", k => k.monthly_budget_usd, 1],
      ["Requests this month", k => usage(k, "requests"), 1],
      ["Spend this month (USD)", k => Math.round(usage(k, "cost_usd") * 1e6) / 1e6, 1],
      ["Actions", k => k.source === "config" ? "" : el("span", {class: "row"}, k.active ? [
        act("Edit", edit(k), "", k.id), act("Rotate", rotate(k), "", k.id),
        act("Revoke", revoke(k), "danger", k.id)] : [act("Reactivate", reactivate(k), "", k.id)])
      ]], list.data));
};

const TEAM_FIELDS = [["description", "Description"], ["rpm_limit", "RPM limit", "number"],
  ["tpm_limit", "TPM limit", "number"], ["max_parallel_requests", "Parallel requests", "number"],
  ["monthly_budget_usd", "Monthly budget (USD)", "number"]];
function teamBody(raw) {
  const body = {};
  for (const [n, , t] of TEAM_FIELDS) body[n] = t === "number" ? numberOrNull(raw[n]) : raw[n];
  return body;
}
C.pages.teams = async host => {
  const list = await api("GET", "/admin/teams");
  const act = (label, fn, cls, what) => el("button", {type: "button", class: cls,
    "aria-label": what ? label + " " + what : null,
    on: {click: () => fn().catch(e => say(e.message, true))}}, [label]);
  const create = async () => {
    const raw = await formDialog("New team", [["id", "Team id", "text", ""],
      ...TEAM_FIELDS.map(([n, l, t]) => [n, l, t, ""])]);
    if (!raw) return;
    await api("POST", "/admin/teams", {id: raw.id, ...teamBody(raw)});
    say("Team " + raw.id + " created."); route();
  };
  const edit = t => async () => {
    const raw = await formDialog("Edit team " + t.id,
      TEAM_FIELDS.map(([n, l, ty]) => [n, l, ty, t[n]]));
    if (!raw) return;
    await api("PATCH", "/admin/teams/" + encodeURIComponent(t.id), teamBody(raw));
    say("Team " + t.id + " saved."); route();
  };
  const remove = t => async () => {
    if (!confirm("Delete team " + t.id + "?")) return;
    await api("DELETE", "/admin/teams/" + encodeURIComponent(t.id));
    say("Team " + t.id + " deleted."); route();
  };
  host.replaceChildren(heading("Teams"), act("New team", create, "primary"),
    table("Teams", [["Id", t => t.id], ["Description", t => t.description],
      ["Keys", t => t.keys, 1], ["Spend USD", t => t.spend_usd, 1],
      ["Budget USD", t => t.monthly_budget_usd, 1], ["RPM", t => t.rpm_limit, 1],
      ["TPM", t => t.tpm_limit, 1], ["Parallel", t => t.max_parallel_requests, 1],
      ["Actions", t => el("span", {class: "row"}, [act("Edit", edit(t), "", t.id),
        act("Delete", remove(t), "danger", t.id)])]], list.data));
};

function isoDay(d) { return d.toISOString().slice(0, 10); }
C.pages.spend = async host => {
  const today = new Date();
  const start = C.spendStart || isoDay(new Date(today.getTime() - 29 * 86400000));
  const end = C.spendEnd || isoDay(today);
  const by = C.spendBy || "key";
  const q = `start=${start}&end=${end}`;
  const [perDay, grouped] = await Promise.all([api("GET", `/admin/spend?group_by=day,${by}&` + q),
    api("GET", `/admin/spend?group_by=${by}&` + q)]);
  const form = el("form", {class: "inline", "aria-label": "Spend report range", on: {submit: ev => {
    ev.preventDefault();
    C.spendStart = form.elements.start.value; C.spendEnd = form.elements.end.value;
    C.spendBy = form.elements.by.value; route();
  }}}, [
    el("div", {}, [el("label", {for: "sp-start"}, ["From"]),
      el("input", {id: "sp-start", name: "start", type: "date", value: start})]),
    el("div", {}, [el("label", {for: "sp-end"}, ["To"]),
      el("input", {id: "sp-end", name: "end", type: "date", value: end})]),
    el("div", {}, [el("label", {for: "sp-by"}, ["By"]), el("select", {id: "sp-by", name: "by"},
      ["key", "team", "model"].map(g => el("option", {value: g, selected: g === by}, [g])))]),
    el("button", {type: "submit"}, ["Show"]),
    el("a", {href: `/admin/spend?group_by=day,${by}&${q}&format=csv`, download: "spend.csv"},
      ["Download CSV"])]);
  const label = r => by === "key" ? (r.key_name ? `${r.key_name} (${r.key_id})` : r.key_id)
    : by === "team" ? (r.team || "(no team)") : r[by];
  const t = grouped.totals;
  const series = groupSeries(perDay.data, label);
  const dayList = days(start, end);
  host.replaceChildren(heading("Spend"), form,
    el("p", {}, [`Total: ${t.requests} requests, ${t.prompt_tokens} prompt and ` +
      `${t.completion_tokens} completion tokens, $${t.cost_usd.toFixed(6)}`]),
    el("div", {class: "charts"}, [
      stackedChart(`Requests per day by ${by}`, dayList, series, "requests"),
      stackedChart(`Spend per day by ${by} (USD)`, dayList, series, "cost_usd")]),
    legend(series),
    table("By " + by, [[by, label], ["Requests", r => r.requests, 1],
      ["Prompt tokens", r => r.prompt_tokens, 1],
      ["Completion tokens", r => r.completion_tokens, 1],
      ["Cost USD", r => r.cost_usd.toFixed(6), 1]], grouped.data));
};

C.pages.requests = async host => {
  // drawn once; each refresh replaces the table's rows and says how many requests are new
  const recent = liveTable("Recent requests, newest first", [["At", r => r.at],
    ["Request", r => r.request_id], ["Key", r => r.key_id], ["Team", r => r.team],
    ["Model", r => r.model], ["Deployment", r => r.deployment],
    ["Stream", r => r.stream ? "yes" : "no"], ["Status", r => r.status, 1],
    ["Latency ms", r => r.latency_ms, 1], ["Prompt", r => r.prompt_tokens, 1],
    ["Completion", r => r.completion_tokens, 1]]);
  let seen = null;
  const draw = async () => {
    const list = await api("GET", "/admin/requests/recent?limit=100");
    recent.update(list.data);
    const ids = new Set(list.data.map(r => r.request_id));
    if (seen) {
      const fresh = list.data.filter(r => !seen.has(r.request_id)).length;
      if (fresh) say(fresh === 1 ? "1 new request." : fresh + " new requests.");
    }
    seen = ids;
  };
  await draw();
  host.replaceChildren(heading("Recent requests"),
    el("p", {}, ["Metadata only, from every worker process. Refreshed every 3 seconds. ",
      autoRefresh(3, draw)]), recent.node);
};

C.pages.audit = async host => {
  const rows = [];
  let before = null;
  const more = el("button", {type: "button"}, ["Older entries"]);
  const box = el("div");
  const load = async () => {
    const page = await api("GET", "/admin/audit?limit=100" + (before ? "&before=" + before : ""));
    rows.push(...page.data);
    if (page.data.length) before = page.data[page.data.length - 1].id;
    more.hidden = !page.has_more;
    box.replaceChildren(table("Audit log, newest first", [["At", r => r.at],
      ["Actor", r => r.actor], ["Door", r => r.door], ["Address", r => r.address],
      ["Action", r => r.action], ["Target", r => r.target], ["Outcome", r => r.outcome],
      ["Changes", r => JSON.stringify(r.changes), "wrap"]], rows));
  };
  more.addEventListener("click", () => load().catch(e => say(e.message, true)));
  host.replaceChildren(heading("Audit"), box, more);
  await load();
};

C.pages.config = async host => {
  const cfg = await api("GET", "/admin/config");
  host.replaceChildren(heading("Configuration"),
    el("p", {}, [`Generation ${cfg.generation}; secrets are masked.`,
      cfg.last_error ? " The last reload was refused: " + cfg.last_error : ""]),
    el("pre", {id: "config-json", tabindex: "0", "aria-label": "Effective configuration"},
      [JSON.stringify(cfg.settings, null, 2)]));
};

document.addEventListener("DOMContentLoaded", async () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-close").addEventListener("click", () => $("secret-dialog").close());
  // however the dialog closes (button, Escape), the secret leaves the page
  $("secret-dialog").addEventListener("close", () => { $("secret-value").value = ""; });
  window.addEventListener("hashchange", () => { route(); $("main").focus(); });
  try { signedIn(await api("GET", "/console/session")); } catch (e) { showSignIn(); say(""); }
});
"""

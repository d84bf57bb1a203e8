"""The console script's plumbing: DOM helpers, the API client (cookie session, CSRF header),
sign-in and sign-out, the page router, tables and dialogs. Plain ES2020, no library:
the browser runs it as it is served."""

from __future__ import annotations

from typing import Final

JS: Final = r"""
"use strict";
const C = {csrf: null, header: "x-ailb-csrf", timer: null, pages: {}};

function el(tag, attrs, kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) n.addEventListener(ev, fn);
    else if (v !== null && v !== undefined && v !== false) n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids || []) n.append(c instanceof Node ? c : String(c ?? ""));
  return n;
}
function $(id) { return document.getElementById(id); }
function say(text, error) {
  const s = $("status");
  s.textContent = text || ""; s.className = "status" + (error ? " error" : "");
}
function fmt(v, digits) {
  if (v === null || v === undefined || v === "") return "\u2014";
  if (typeof v === "number") return digits === undefined ? String(v) : v.toFixed(digits);
  return String(v);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
async function api(method, path, body) {
  const headers = {"accept": "application/json"};
  if (method !== "GET") headers[C.header] = C.csrf || "";
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, {method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!r.ok) {
    const msg = data && data.error ? data.error.message : r.status + " " + r.statusText;
    if (r.status === 401) showSignIn(msg);
    throw new ApiError(r.status, msg);
  }
  return data;
}

function showSignIn(message) {
  stopTimer();
  C.csrf = null;
  $("nav").hidden = true; $("sign-out").hidden = true; $("page").replaceChildren();
  $("sign-in").hidden = false;
  if (message) say(message, true);
  $("admin-key").focus();
}
function signedIn(session) {
  C.csrf = session.csrf_token; C.header = session.csrf_header;
  $("sign-in").hidden = true; $("nav").hidden = false; $("sign-out").hidden = false;
  route();
}
async function signIn(ev) {
  ev.preventDefault();
  const input = $("admin-key");
  try {
    const session = await api("POST", "/console/session", {admin_key: input.value});
    input.value = ""; say("Signed in.");
    input.removeAttribute("aria-invalid"); input.removeAttribute("aria-describedby");
    $("sign-in-error").hidden = true;
    signedIn(session);
  } catch (e) {
    const error = $("sign-in-error");
    error.textContent = "Sign-in failed: " + e.message; error.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "sign-in-error");
    say("Sign-in failed: " + e.message, true);
    input.focus();
  }
}
async function signOut() {
  try { await api("DELETE", "/console/session"); } catch (e) { /* the session is gone */ }
  showSignIn(); say("Signed out.");
}

function stopTimer() { if (C.timer) { clearInterval(C.timer); C.timer = null; } }
function every(seconds, fn) { stopTimer(); C.timer = setInterval(fn, seconds * 1000); }

async function route() {
  if (!C.csrf) return;
  stopTimer();
  const name = (location.hash || "#overview").slice(1);
  const page = C.pages[name] || C.pages.overview;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const host = $("page");
  host.replaceChildren(el("p", {}, ["Loading\u2026"]));
  try { await page(host); } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) say(e.message, true);
  }
}

function liveTable(caption, cols) {
  // cols: [label, (row) => cell, kind]: kind 1 for a number, "wrap" for long text.
  // {node, update(rows)}: update replaces the body's rows only (the table stays in place)
  const cls = c => c[2] === "wrap" ? "wrap" : c[2] ? "num" : null;
  const head = el("tr", {}, cols.map(c => el("th", {scope: "col", class: cls(c)}, [c[0]])));
  const tbody = el("tbody");
  const update = rows => {
    const body = rows.map(r => el("tr", {}, cols.map(c => {
      const v = c[1](r);
      return el("td", {class: cls(c)}, [v instanceof Node ? v : fmt(v)]);
    })));
    if (!rows.length) body.push(el("tr", {}, [el("td", {colspan: cols.length},
      ["Nothing yet."])]));
    tbody.replaceChildren(...body);
  };
  const node = el("div", {class: "scroll"}, [el("table", {}, [el("caption", {}, [caption]),
    el("thead", {}, [head]), tbody])]);
  return {node, update};
}
function table(caption, cols, rows) {
  const t = liveTable(caption, cols);
  t.update(rows);
  return t.node;
}
function autoRefresh(seconds, fn) {
  // refreshes every `seconds` until the page changes; the button pauses and resumes it
  let paused = false;
  const start = () => every(seconds, () => fn().catch(e => say(e.message, true)));
  const button = el("button", {type: "button", id: "refresh-toggle"}, ["Pause auto-refresh"]);
  button.addEventListener("click", () => {
    paused = !paused;
    button.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
    if (paused) { stopTimer(); say("Auto-refresh paused."); }
    else { start(); say("Auto-refresh resumed."); }
  });
  start();
  return button;
}

function showSecret(secret) {
  const d = $("secret-dialog");
  $("secret-value").value = secret;
  d.showModal(); $("secret-value").select();
}
async function copySecret() {
  const input = $("secret-value");
  input.select();
  try { await navigator.clipboard.writeText(input.value); }
  catch (e) { document.execCommand("copy"); }
  say("Copied to the clipboard.");
}

// fields: [[name, label, type, value]]; resolves with {name: raw string} or null
function formDialog(title, fields) {
  const d = $("form-dialog");
  $("form-title").textContent = title;
  $("form-fields").replaceChildren(el("div", {class: "grid"}, fields.map(([n, l, t, v]) =>
    el("div", {}, [el("label", {for: "f-" + n}, [l]),
      el("input", {id: "f-" + n, name: n, type: t || "text", value: v ?? "",
        step: t === "number" ? "any" : null})]))));
  return new Promise(resolve => {
    const form = $("edit-form");
    const done = value => { d.close(); form.onsubmit = null; resolve(value); };
    form.onsubmit = ev => {
      ev.preventDefault();
      const out = {};
      for (const [n] of fields) out[n] = form.elements[n].value.trim();
      done(out);
    };
    $("form-cancel").onclick = () => done(null);
    d.oncancel = () => resolve(null);
    d.showModal();
    const first = form.querySelector("input"); if (first) first.focus();
  });
}
function numberOrNull(raw) { return raw === "" ? null : Number(raw); }
"""

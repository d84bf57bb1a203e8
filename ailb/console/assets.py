"""The console's page and style, as Python strings: they ship inside the package (and the
one-file binary) with the code, need no build step and no CDN, and work offline. The script is
in :mod:`ailb.console.js_core` (plumbing), :mod:`ailb.console.js_chart` (charts) and
:mod:`ailb.console.js_pages` (pages)."""

from __future__ import annotations

from typing import Final

from ailb.console import js_chart, js_core, js_pages

PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AILB console</title>
<link rel="stylesheet" href="/console/app.css">
<script src="/console/app.js" defer></script>
</head><body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
 <span class="brand">AILB console</span>
 <nav aria-label="Console pages" id="nav" hidden>
  <a href="#overview">Deployments</a><a href="#keys">Keys</a><a href="#teams">Teams</a>
  <a href="#spend">Spend</a><a href="#requests">Recent requests</a><a href="#audit">Audit</a>
  <a href="#config">Configuration</a>
 </nav>
 <button type="button" id="sign-out" hidden>Sign out</button>
</header>
<main id="main" tabindex="-1">
 <section id="sign-in" aria-labelledby="sign-in-title" hidden>
  <h1 id="sign-in-title">Sign in</h1>
  <form id="sign-in-form">
   <label for="admin-key">Admin key</label>
   <input id="admin-key" name="admin_key" type="password" autocomplete="current-password"
    required>
   <p id="sign-in-error" class="field-error" hidden></p>
   <button type="submit">Sign in</button>
  </form>
 </section>
 <section id="page"></section>
</main>
<p id="status" role="status" class="status"></p>
<dialog id="secret-dialog" aria-labelledby="secret-title">
 <h2 id="secret-title">The key's secret</h2>
 <p>It is shown this once: copy it now.</p>
 <label for="secret-value">Secret</label>
 <input id="secret-value" readonly>
 <div class="row"><button type="button" id="secret-copy">Copy</button>
 <button type="button" id="secret-close">Close</button></div>
</dialog>
<dialog id="form-dialog" aria-labelledby="form-title">
 <form id="edit-form" method="dialog"><h2 id="form-title"></h2><div id="form-fields"></div>
 <div class="row"><button type="submit" value="save">Save</button>
 <button type="button" id="form-cancel">Cancel</button></div></form>
</dialog>
</body></html>
"""

STYLE: Final = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa;--acc:#0550ae;
--ok:#116329;--bad:#cf222e;--warn:#9a6700}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
.skip{position:absolute;left:-999px}.skip:focus{left:.5rem;top:.5rem;background:#fff;padding:.3rem}
.top{display:flex;gap:1rem;align-items:center;padding:.5rem 1rem;
border-bottom:1px solid var(--line);background:var(--soft);flex-wrap:wrap}
.brand{font-weight:700}
nav{display:flex;gap:.2rem;flex-wrap:wrap;flex:1}
nav a{padding:.3rem .55rem;border-radius:5px;color:var(--acc);text-decoration:none}
nav a[aria-current=page]{background:var(--acc);color:#fff}
main{padding:.8rem 1.2rem 4rem;max-width:1320px}
.field-error{color:var(--bad);margin:.2rem 0}
h1{font-size:1.35rem;margin:.2rem 0 .6rem}h2{font-size:1.1rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border-bottom:1px solid var(--line);padding:.3rem .45rem;text-align:left;
vertical-align:top;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;word-break:break-all;min-width:18rem;font-size:12.5px}
caption{text-align:left;font-weight:600;padding:.3rem 0}
button,input,select{font:inherit}
button{padding:.3rem .7rem;border:1px solid var(--line);border-radius:5px;background:#fff;
cursor:pointer}
button.primary,form button[type=submit]{background:var(--acc);color:#fff;border-color:var(--acc)}
button.danger{color:var(--bad)}
input,select{padding:.3rem .4rem;border:1px solid var(--muted);border-radius:4px}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,
main:focus-visible{outline:3px solid #0969da;outline-offset:2px}
label{display:block;font-weight:600;margin:.4rem 0 .15rem}
form.inline{display:flex;gap:.6rem;align-items:flex-end;flex-wrap:wrap}
form.inline label{margin:0}
.row{display:flex;gap:.5rem;margin-top:.7rem}td .row{margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.3rem .8rem}
.state-up,.state-healthy{color:var(--ok);font-weight:600}
.state-down,.state-unhealthy{color:var(--bad);font-weight:600}
.state-cooling_down,.state-unknown,.state-degraded{color:var(--warn);font-weight:600}
.status{position:fixed;bottom:0;left:0;right:0;margin:0;padding:.35rem 1rem;
background:var(--soft);border-top:1px solid var(--line);min-height:1.9rem}
.status.error{color:var(--bad)}
dialog{border:1px solid var(--line);border-radius:8px;max-width:40rem;width:90%}
dialog::backdrop{background:rgba(0,0,0,.3)}
#secret-value{width:100%;font-family:ui-monospace,monospace}
pre{background:var(--soft);padding:.6rem;overflow:auto;max-height:60vh;font-size:12.5px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
figure{margin:0}figcaption{font-weight:600}
svg.chart{width:100%;height:180px;background:var(--soft);border:1px solid var(--line)}
svg.chart text{font-size:10px;fill:var(--muted)}
.s0{fill:#0550ae}.s1{fill:#bc4c00}.s2{fill:#116329}.s3{fill:#8250df}.s4{fill:#bf3989}
.s5{fill:#6e7781}
.legend{list-style:none;display:flex;gap:.4rem 1rem;flex-wrap:wrap;padding:0;margin:.4rem 0}
.legend li{display:flex;align-items:center;gap:.3rem}svg.swatch{width:12px;height:12px}
.scroll{overflow:auto;max-height:60vh}
"""


def script() -> str:
    """The console's script: the plumbing first, then the pages, then the start."""
    return js_core.JS + js_chart.JS + js_pages.JS

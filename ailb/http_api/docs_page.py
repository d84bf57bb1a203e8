"""``/openapi.json`` and ``/docs``: the API's OpenAPI document and a page that renders it.

The page is self-contained (no CDN: it works offline and inside the binary): a little script
fetches ``/openapi.json`` and lists every operation with its parameters, request body schema,
answers and errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Final

from quart import Response

from ailb.schemas.openapi import document

PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AILB API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem 1.5rem;
color:#1b1f24;background:#fff}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de;text-transform:capitalize}
details{border:1px solid #d0d7de;border-radius:6px;margin:.5rem 0;padding:.4rem .8rem}
summary{cursor:pointer}code,pre{font:13px ui-monospace,monospace}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;max-height:28rem}
.m{display:inline-block;min-width:4.2rem;font-weight:700;text-transform:uppercase}
.get{color:#0550ae}.post{color:#116329}.patch{color:#8250df}.delete{color:#cf222e}
</style></head><body>
<header><h1>AILB API</h1><p id="about"></p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p></header>
<main id="ops" aria-live="polite">Loading&hellip;</main>
<script>
"use strict";
function el(tag, attrs, kids){const n=document.createElement(tag);
 for(const [k,v] of Object.entries(attrs||{})) n.setAttribute(k,v);
 for(const c of kids||[]) n.append(c);return n;}
function resolve(doc, s){return s&&s.$ref?doc.components.schemas[s.$ref.split("/").pop()]:s;}
function schemaBlock(doc, title, s){
 const name=s&&s.$ref?s.$ref.split("/").pop():"";
 return el("details",{},[el("summary",{},[title+(name?": "+name:"")]),
  el("pre",{},[JSON.stringify(resolve(doc,s),null,2)])]);}
fetch("/openapi.json").then(r=>r.json()).then(doc=>{
 document.getElementById("about").textContent=doc.info.description+" Version "+
  doc.info.version+".";
 const main=document.getElementById("ops");main.textContent="";
 const byTag={};
 for(const [path,ops] of Object.entries(doc.paths)) for(const [method,op] of Object.entries(ops))
  (byTag[op.tags[0]]=byTag[op.tags[0]]||[]).push([path,method,op]);
 for(const [tag,ops] of Object.entries(byTag)){
  const sec=el("section",{"aria-labelledby":"t-"+tag},[el("h2",{id:"t-"+tag},[tag])]);
  for(const [path,method,op] of ops){
   const kids=[el("summary",{},[el("span",{class:"m "+method},[method])," ",
    el("code",{},[path])," \\u2014 "+op.summary])];
   for(const p of op.parameters||[]) kids.push(el("p",{},[el("code",{},[p.name]),
    " ("+p.in+(p.required?", required":"")+")"+(p.description?": "+p.description:"")]));
   const body=op.requestBody&&op.requestBody.content;
   if(body) for(const [type,c] of Object.entries(body))
    kids.push(schemaBlock(doc,"Request body ("+type+")",c.schema));
   const list=el("ul",{},[]);
   for(const [status,a] of Object.entries(op.responses)){
    const json=a.content&&a.content["application/json"];
    list.append(el("li",{},[el("strong",{},[status])," "+a.description,
     ...(json&&json.schema.$ref?[" ",schemaBlock(doc,"schema",json.schema)]:[])]));}
   kids.push(el("p",{},["Answers:"]),list);
   sec.append(el("details",{id:op.operationId},kids));}
  main.append(sec);}
}).catch(e=>{document.getElementById("ops").textContent="Could not load /openapi.json: "+e;});
</script></body></html>
"""


def routes() -> list[tuple[str, str, Callable[[], Awaitable[Response]], list[str]]]:
    """(rule, endpoint, view, methods): the document is made once, when the app is made."""
    body = json.dumps(document(), separators=(",", ":"))

    async def openapi() -> Response:
        return Response(body, content_type="application/json")

    async def docs() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    return [("/openapi.json", "openapi", openapi, ["GET"]), ("/docs", "docs", docs, ["GET"])]

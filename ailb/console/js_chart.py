"""The console script's charts: stacked SVG bars per day, one series per group (the top
groups by spend, the rest summed as "other"), with a legend and a text alternative. Colours
come from the style sheet (classes ``s0``..``s5``): the page's Content-Security-Policy allows no
inline style."""

from __future__ import annotations

from typing import Final

JS: Final = r"""
const SERIES_MAX = 5;  // the top groups drawn each on their own; the rest is "other"
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, kids) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  for (const c of kids || []) n.append(c);
  return n;
}
function days(start, end) {
  // every day of the range (the report lists days with requests only)
  const out = [];
  for (let t = Date.parse(start + "T00:00:00Z"); t <= Date.parse(end + "T00:00:00Z") &&
       out.length < 400; t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}
function groupSeries(rows, labelOf) {
  // rows of a day,<group> report -> [{label, requests: Map(day), cost_usd: Map(day)}]
  const blank = label => ({label, requests: new Map(), cost_usd: new Map(), spend: 0, count: 0});
  const add = (s, day, r) => {
    for (const f of ["requests", "cost_usd"]) s[f].set(day, (s[f].get(day) || 0) + r[f]);
    s.spend += r.cost_usd; s.count += r.requests;
  };
  const groups = new Map();
  for (const r of rows) {
    const label = labelOf(r);
    if (!groups.has(label)) groups.set(label, blank(label));
    add(groups.get(label), r.day, r);
  }
  const ranked = [...groups.values()].sort((a, b) => b.spend - a.spend || b.count - a.count ||
    (a.label < b.label ? -1 : 1));
  if (ranked.length <= SERIES_MAX + 1) return ranked;
  const other = blank("other");
  for (const s of ranked.slice(SERIES_MAX))
    for (const day of s.requests.keys())
      add(other, day, {requests: s.requests.get(day) || 0, cost_usd: s.cost_usd.get(day) || 0});
  return [...ranked.slice(0, SERIES_MAX), other];
}
function stackedChart(title, dayList, series, field) {
  const totals = dayList.map(d => series.reduce((n, s) => n + (s[field].get(d) || 0), 0));
  const top = Math.max(0, ...totals);
  const w = 600, h = 180, pad = 28, max = top || 1;
  const bw = dayList.length ? (w - pad) / dayList.length : 0;
  const kids = [svg("title", {}, [title])];
  dayList.forEach((day, i) => {
    let y = h - pad;
    series.forEach((s, j) => {
      const v = s[field].get(day) || 0;
      if (!v) return;
      const bh = (h - 2 * pad) * v / max;
      y -= bh;
      const bar = svg("rect", {x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh,
        class: "s" + j});
      bar.append(svg("title", {}, [`${day} ${s.label}: ${+v.toPrecision(6)}`]));
      kids.push(bar);
    });
    if (dayList.length <= 12 || i % Math.ceil(dayList.length / 12) === 0)
      kids.push(svg("text", {x: pad + i * bw + 2, y: h - 8}, [day.slice(5)]));
  });
  kids.push(svg("text", {x: 2, y: 12}, [String(+top.toPrecision(4))]));
  const sum = s => [...s[field].values()].reduce((a, b) => a + b, 0);
  const summary = series.map(s => `${s.label} ${+sum(s).toPrecision(6)}`).join(", ") ||
    "no data";
  return el("figure", {}, [el("figcaption", {}, [title]),
    svg("svg", {class: "chart", viewBox: `0 0 ${w} ${h}`, role: "img",
      "aria-label": title + ", total per group: " + summary, preserveAspectRatio: "none"},
      kids)]);
}
function legend(series) {
  return el("ul", {class: "legend", "aria-label": "Chart legend"}, series.map((s, j) =>
    el("li", {}, [svg("svg", {class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true"},
      [svg("rect", {width: 10, height: 10, class: "s" + j})]), s.label])));
}
"""

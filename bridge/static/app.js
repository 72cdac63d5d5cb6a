// pingjia hall status page: polls /api/hall and redraws; no framework, no build step.
"use strict";
const POLL_MS = 1500;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function stars(n) {
  return el("span", "stars" + (n <= 2 ? " low" : ""), "★".repeat(n));
}
function hhmm(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit", hour12: false });
}
function date(ts) {
  const d = new Date(ts * 1000);
  return (d.getMonth() + 1) + "月" + d.getDate() + "日";
}
function pct(v) { return v === null || v === undefined ? "–" : v.toFixed(1) + "%"; }
function setText(id, v) { document.getElementById(id).textContent = v; }
function fill(node, children) { node.replaceChildren(...children); }
function row(cells, cls) {
  const tr = el("tr", cls);
  for (const c of cells) {
    const td = el("td", c.cls);
    if (c.node) td.append(c.node); else td.textContent = c.text === undefined ? "" : c.text;
    tr.append(td);
  }
  return tr;
}

function renderKpis(h) {
  const t = h.today;
  setText("k-finished", t.finished);
  setText("k-rated", t.rated);
  setText("k-rate", pct(t.rating_rate));
  setText("k-sat", pct(t.satisfaction_rate));
  setText("k-bad", t.bad);
  document.getElementById("k-bad").parentNode.classList.toggle("bad", t.bad > 0);
  const bound = h.windows.filter((w) => w.device_id);
  setText("k-online", bound.filter((w) => w.state === "ok" || w.state === "journal" || w.state === "error").length + " / " + h.windows.length);
}

function renderAlerts(h) {
  fill(document.getElementById("alerts"), h.alerts.map((a) => {
    const d = el("div", "alert " + a.level, a.text);
    d.dataset.window = a.window_id || "";
    d.dataset.state = a.state;
    if (a.detail) d.append(el("span", "d", a.detail));
    return d;
  }));
}

const COMPACT_FROM = 13; // windows; a big hall gets smaller cards so all fit on one screen

function renderWindows(h) {
  const grid = document.getElementById("windows");
  grid.classList.toggle("compact", h.windows.length >= COMPACT_FROM);
  fill(grid, h.windows.map((w) => {
    const card = el("div", "win s-" + w.state);
    card.dataset.window = w.window_id;
    card.dataset.state = w.state;
    const top = el("div", "top");
    top.append(el("span", "code", w.window_id), el("span", "pill", w.state_label));
    card.append(top, el("div", "name", [w.window_name, w.dept_name].filter(Boolean).join(" · ") || "\u00a0"));
    card.append(el("div", "dev", w.device_id
      ? w.device_id + (w.fw_version ? " · v" + w.fw_version : "") + (w.last_seen ? " · " + w.last_seen_ago : "")
        + (w.journal_depth ? " · 积压 " + w.journal_depth : "")
      : "无评价器"));
    card.append(el("div", "detail", w.state === "ok" ? "" : w.detail));
    const t = w.today;
    const nums = el("div", "nums");
    const n = (label, v) => { const s = el("span", null, label + " "); s.append(el("b", null, v)); return s; };
    nums.append(n("办结", t.finished), n("评价", t.rated), n("满意", t.satisfied));
    card.append(nums);
    const last = el("div", "last");
    if (t.prompting) last.append(el("span", "prompting", "等待评价… "));
    else if (t.in_progress) last.append(el("span", "busy", "办理中 "));
    if (t.last_stars) { last.append("最近 ", stars(t.last_stars), " " + hhmm(t.last_at)); }
    card.append(last);
    return card;
  }));
}

function renderDist(h) {
  const max = Math.max(1, ...h.today.stars.map((s) => s.count));
  fill(document.getElementById("dist"), h.today.stars.map((s) => {
    const bar = el("div");
    bar.style.width = (100 * s.count / max) + "%";
    const tr = row([{ text: s.label }, { node: stars(s.stars) }, { node: bar, cls: "bar" }, { text: s.count, cls: "n" }],
      s.stars <= 2 ? "low" : "");
    tr.dataset.stars = s.stars;
    return tr;
  }));
}

function renderRatings(h) {
  const node = document.getElementById("ratings");
  if (!h.ratings.length) return fill(node, [row([{ text: "今日暂无评价", cls: "empty" }])]);
  fill(node, h.ratings.map((r) => {
    const tr = row([
      { text: hhmm(r.pressed_at), cls: "t" },
      { text: r.window_id },
      { node: stars(r.stars) },
      { text: r.label + (r.assess_number === 2 ? "（补充）" : "") },
      { text: r.task_name || r.project_no },
    ]);
    tr.dataset.project = r.project_no;
    return tr;
  }));
}

function renderFollowups(h) {
  const node = document.getElementById("followups");
  if (!h.followups.length) return fill(node, [row([{ text: "没有待办的差评", cls: "empty" }])]);
  fill(node, h.followups.map((f) => {
    const tr = row([
      { text: f.project_no },
      { text: f.window_id },
      { node: f.stars ? stars(f.stars) : el("span", null, "") },
      { text: f.state },
      { text: (f.overdue ? "已超期 " : "截止 ") + date(f.deadline) + (f.overdue ? "" : " · 剩" + Math.ceil(f.days_left) + "天"), cls: "t" },
    ], f.overdue ? "overdue" : "");
    tr.dataset.project = f.project_no;
    return tr;
  }));
}

function render(h) {
  renderKpis(h);
  renderAlerts(h);
  renderWindows(h);
  renderDist(h);
  renderRatings(h);
  renderFollowups(h);
  document.body.dataset.updated = String(h.now);
}

async function poll() {
  try {
    const r = await fetch("/api/hall", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.getElementById("link").hidden = true;
  } catch (e) {
    document.getElementById("link").hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function tick() { setText("clock", new Date().toLocaleTimeString("zh-CN", { hour12: false })); }
tick();
setInterval(tick, 1000);
poll();

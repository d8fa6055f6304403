// The natsedge admin console: one page, hash routes, JSON from /admin/api/*. Everything shown
// that comes from outside (channel names, user ids, data) is set as text, never as markup.

const POINTS = 120;
let csrf = "";
/** Stops the current view's polling when another view opens. */
let stopView = () => {};

// --- helpers ---------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : String(c));
  return el;
}

function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

async function api(path, body) {
  const init = body === undefined
    ? {}
    : { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) };
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin();
    throw new Error("logged out");
  }
  const json = await res.json();
  if (!res.ok) throw new Error(json.error?.message ?? res.statusText);
  return json;
}

/** Runs `tick` now and every `ms` while the view is open, never two at once. */
function every(ms, tick) {
  let busy = false;
  const run = async () => {
    if (busy) return;
    busy = true;
    try {
      await tick();
    } catch (err) {
      if (err.message !== "logged out") console.warn(err);
    } finally {
      busy = false;
    }
  };
  void run();
  const timer = setInterval(run, ms);
  return () => clearInterval(timer);
}

const num = (n, digits = 0) => Number(n).toLocaleString("en", { maximumFractionDigits: digits });
const bytes = (n) => `${num(n / 1048576, 1)} MiB`;
const time = (ms) => new Date(ms).toLocaleTimeString();

function duration(s) {
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d > 0 ? `${d}d ${hr}h` : hr > 0 ? `${hr}h ${m}m` : `${m}m ${s % 60}s`;
}

function table(headers, rows) {
  return h("table", {}, h("tr", {}, headers.map((x) => h("th", {}, x))), rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))));
}

/**
 * Per-second rates summed over nodes from their counter totals: each node's increase since it
 * last answered, over the time since then (a node missing from a poll adds no spike later, a
 * restarted one counts from 0). Undefined until some node answered twice.
 */
class Rates {
  last = new Map();
  rate(at, items, key, fields) {
    const sums = fields.map(() => 0);
    let known = false;
    for (const item of items) {
      const values = fields.map((f) => item[f]);
      const before = this.last.get(item[key]);
      if (before && at > before.at) {
        known = true;
        values.forEach((v, i) => (sums[i] += Math.max(0, v - before.values[i]) / ((at - before.at) / 1000)));
      }
      this.last.set(item[key], { at, values });
    }
    return known ? sums : undefined;
  }
}

/** A line chart of the last POINTS values of each series, redrawn on every push. */
function chart(title, names) {
  const W = 600, H = 160, PAD = 34;
  const el = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", "data-points": "0", role: "img", "aria-label": title });
  const data = names.map(() => []);
  const draw = () => {
    el.replaceChildren();
    const max = Math.max(1, ...data.flat());
    for (const f of [0, 0.5, 1]) {
      const y = H - 16 - f * (H - 24);
      el.append(svg("line", { x1: PAD, x2: W, y1: y, y2: y, class: "grid" }));
      const label = svg("text", { x: 0, y: y + 4 });
      label.textContent = num(max * f, max < 10 ? 1 : 0);
      el.append(label);
    }
    data.forEach((series, s) => {
      const step = (W - PAD) / (POINTS - 1);
      const offset = POINTS - series.length;
      const pts = series.map((v, i) => `${PAD + (offset + i) * step},${H - 16 - (v / max) * (H - 24)}`);
      el.append(svg("polyline", { points: pts.join(" "), class: `s${s}` }));
    });
    el.setAttribute("data-points", String(data[0].length));
  };
  draw();
  const legend = h("div", { class: "legend" }, names.map((n, i) => h("span", { class: `s${i}` }, n)));
  return {
    el: h("div", { class: "panel" }, h("h2", {}, title), el, legend),
    push(values) {
      values.forEach((v, i) => {
        data[i].push(v);
        if (data[i].length > POINTS) data[i].shift();
      });
      draw();
    },
  };
}

// --- views -----------------------------------------------------------------------------------

function overview(view) {
  const card = (id, label) => h("div", { class: "panel card" }, h("b", { id }, "–"), h("span", {}, label));
  const messages = chart("Messages per second (cluster)", ["in (published)", "out (sent to clients)"]);
  const connections = chart("Connections (cluster)", ["connections"]);
  const nodes = h("div", { class: "panel" }, h("h2", {}, "Nodes"));
  view.append(
    h("div", { class: "cards" }, card("nodes", "nodes"), card("connections", "connections"), card("rate-in", "messages in / s"), card("rate-out", "messages out / s")),
    h("div", { class: "charts" }, messages.el, connections.el),
    nodes,
  );
  const rates = new Rates();
  return every(1000, async () => {
    const { at, nodes: list } = await api("/admin/api/stats");
    const total = list.reduce((a, n) => a + n.connections, 0);
    document.getElementById("nodes").textContent = num(list.length);
    document.getElementById("connections").textContent = num(total);
    const r = rates.rate(at, list, "node", ["publications", "messagesSent"]);
    if (r) {
      document.getElementById("rate-in").textContent = num(r[0], 1);
      document.getElementById("rate-out").textContent = num(r[1], 1);
      messages.push(r);
    }
    connections.push([total]);
    nodes.replaceChildren(
      h("h2", {}, "Nodes"),
      table(
        ["node", "version", "uptime", "connections", "subscriptions", "channels", "CPU", "RSS", "loop lag", "NATS RTT"],
        list.map((n) => [
          n.node, n.version, duration(n.uptime), num(n.connections), num(n.subscriptions), num(n.channels),
          `${num(n.cpuPercent, 1)} %`, bytes(n.rssBytes), `${num(n.eventLoopLagMs, 1)} ms`,
          n.natsRttMs === null ? "–" : `${num(n.natsRttMs, 1)} ms`,
        ]),
      ),
    );
  });
}

function channels(view) {
  const search = h("input", { type: "search", placeholder: "search channels", "aria-label": "search channels" });
  const sort = h("select", { "aria-label": "sort by" }, h("option", { value: "subscribers" }, "by subscribers"), h("option", { value: "rate" }, "by rate"), h("option", { value: "ch" }, "by name"));
  const body = h("div");
  view.append(h("div", { class: "panel" }, h("h2", {}, "Channels"), h("div", { class: "toolbar" }, search, sort), body));
  const rates = new Map();
  let last = { at: 0, channels: [], truncated: false };
  const render = () => {
    const q = search.value.trim().toLowerCase();
    const rows = last.channels.filter((c) => c.ch.toLowerCase().includes(q)).map((c) => ({ ...c, rate: rates.get(c.ch)?.rate ?? 0 }));
    const key = sort.value;
    rows.sort((a, b) => (key === "ch" ? a.ch.localeCompare(b.ch) : b[key] - a[key]));
    body.replaceChildren(
      table(["channel", "subscribers", "messages / s", "nodes"], rows.slice(0, 500).map((c) => [
        h("a", { href: `#/channel/${encodeURIComponent(c.ch)}` }, c.ch), num(c.subscribers), num(c.rate, 1), num(c.nodes),
      ])),
      h("p", { class: "muted" }, `${num(rows.length)} channels${last.truncated ? " (a node held more than it reports)" : ""}`),
    );
  };
  search.addEventListener("input", render);
  sort.addEventListener("change", render);
  return every(2000, async () => {
    last = await api("/admin/api/channels");
    for (const c of last.channels) {
      const before = rates.get(c.ch);
      const rate = before && last.at > before.at ? Math.max(0, c.delivered - before.delivered) / ((last.at - before.at) / 1000) : 0;
      rates.set(c.ch, { at: last.at, delivered: c.delivered, rate });
    }
    render();
  });
}

function channel(view, ch) {
  const info = h("div", { class: "panel" }, h("h2", {}, "Channel"), h("p", {}, ch));
  const data = h("textarea", { "aria-label": "publication data (JSON)" }, '{"text": "hello from the admin console"}');
  const result = h("span", { class: "muted" });
  const form = h("form", { class: "panel", id: "publish" }, h("h2", {}, "Publish"), data, h("div", { class: "toolbar" }, h("button", { type: "submit" }, "Publish"), result));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("/admin/api/publish", { channel: ch, data: JSON.parse(data.value) });
      result.className = "muted";
      result.textContent = `published${r.offset === undefined ? "" : ` at offset ${r.offset}`}`;
    } catch (err) {
      result.className = "error";
      result.textContent = err.message;
    }
  });
  const tailRows = h("tbody");
  const tail = h("div", { class: "panel scroll" }, h("h2", {}, "Live"), h("table", { id: "tail" }, h("tr", {}, ["time", "offset", "user", "data"].map((x) => h("th", {}, x))), tailRows));
  const presence = h("div", { class: "panel" });
  const history = h("div", { class: "panel scroll" });
  view.append(info, form, tail, presence, history);
  const pubRow = (p) => h("tr", {}, h("td", {}, time(p.ts)), h("td", {}, p.offset ?? "–"), h("td", {}, p.user ?? "–"), h("td", { class: "data" }, p.data));
  api(`/admin/api/channel?ch=${encodeURIComponent(ch)}`).then((c) => {
    info.replaceChildren(h("h2", {}, "Channel"), h("p", {}, h("b", {}, c.ch), ` in namespace ${c.namespace}`));
    presence.replaceChildren(h("h2", {}, "Presence"), c.presence === null
      ? h("p", { class: "muted" }, "no presence in this namespace")
      : table(["client", "user", "info"], Object.entries(c.presence).map(([client, m]) => [client, h("a", { href: `#/user/${encodeURIComponent(m.user)}` }, m.user), JSON.stringify(m.info ?? null)])));
    history.replaceChildren(h("h2", {}, "History (newest first)"), c.history === null
      ? h("p", { class: "muted" }, "no history in this namespace")
      : h("table", {}, h("tr", {}, ["time", "offset", "user", "data"].map((x) => h("th", {}, x))), c.history.pubs.map(pubRow)));
  }, (err) => info.append(h("p", { class: "error" }, err.message)));
  let after = 0;
  return every(1000, async () => {
    const r = await api(`/admin/api/tail?ch=${encodeURIComponent(ch)}&after=${after}`);
    for (const p of r.pubs) tailRows.prepend(pubRow(p));
    while (tailRows.children.length > 50) tailRows.lastChild.remove();
    after = r.seq;
  });
}

function users(view) {
  const input = h("input", { name: "user", placeholder: "user id", "aria-label": "user id", required: "" });
  const form = h("form", { class: "panel" }, h("h2", {}, "Find a user"), h("div", { class: "toolbar" }, input, h("button", { type: "submit" }, "Show")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/user/${encodeURIComponent(input.value)}`;
  });
  view.append(form);
  return () => {};
}

function user(view, id) {
  const status = h("span", { class: "muted" });
  const disconnect = h("button", { type: "button", class: "danger" }, "Disconnect everywhere");
  const list = h("div");
  view.append(h("div", { class: "panel" }, h("h2", {}, "User"), h("p", {}, h("b", {}, id)), h("div", { class: "toolbar" }, disconnect, status), list));
  disconnect.addEventListener("click", async () => {
    try {
      await api("/admin/api/disconnect", { user: id });
      status.className = "muted";
      status.textContent = "disconnected";
    } catch (err) {
      status.className = "error";
      status.textContent = err.message;
    }
  });
  return every(2000, async () => {
    const { nodes } = await api(`/admin/api/user?user=${encodeURIComponent(id)}`);
    const rows = nodes.flatMap((n) => n.sessions.map((s) => [n.node, s.client, new Date(s.since).toLocaleString()]));
    list.replaceChildren(table(["node", "client", "connected since"], rows), h("p", { class: "muted", id: "user-connections" }, `${rows.length} connections`));
  });
}

function config(view) {
  const pre = h("pre");
  view.append(h("div", { class: "panel" }, h("h2", {}, "Configuration in effect (secrets redacted)"), pre));
  api("/admin/api/config").then((c) => (pre.textContent = JSON.stringify(c, null, 2)), (err) => (pre.textContent = err.message));
  return () => {};
}

// --- routing and login -------------------------------------------------------------------------

function route() {
  stopView();
  const view = document.getElementById("view");
  view.replaceChildren();
  const [, page = "", arg = ""] = location.hash.split("/");
  const param = decodeURIComponent(arg);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${page === "channel" ? "channels" : page === "user" ? "users" : page}`);
  const views = { "": overview, channels, channel, users, user, config };
  stopView = (views[page] ?? overview)(view, param);
}

function showLogin() {
  stopView();
  stopView = () => {};
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
}

async function start() {
  const res = await fetch("/admin/api/session");
  if (!res.ok) return showLogin();
  csrf = (await res.json()).csrf;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  route();
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("login-error");
  const res = await fetch("/admin/login", { method: "POST", body: new URLSearchParams(new FormData(e.target)) });
  if (res.ok) {
    error.textContent = "";
    e.target.reset();
    await start();
  } else {
    error.textContent = (await res.json()).error?.message ?? res.statusText;
  }
});

document.getElementById("logout").addEventListener("click", async () => {
  await api("/admin/logout", {}).catch(() => undefined);
  showLogin();
});

window.addEventListener("hashchange", () => {
  if (!document.getElementById("app").hidden) route();
});

void start();

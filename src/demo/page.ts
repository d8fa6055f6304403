/**
 * The chat demo served at /demo when `demo` is on: rooms, messages, who is online, connection
 * state and transport, built only on the client SDK (/natsedge-client.js). Query parameters:
 * `ns` (namespace, default public), `room`, `name`, `token` (a JWT, for non-anonymous namespaces),
 * `transports` (e.g. `longpoll` to force the fallback), `urls` (comma-separated gateway URLs to
 * use instead of this page's origin; they must allow this origin, see `allowedOrigins`).
 */
export const DEMO_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>natsedge chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; display: grid; grid-template-columns: 180px 1fr 200px; height: 100vh; color: #1d2330; }
  aside, main { padding: 12px; overflow: auto; }
  aside { background: #f3f5f9; }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: #5b6478; margin: 8px 0; }
  #rooms button { display: block; width: 100%; margin: 2px 0; padding: 6px; text-align: left; border: 0; background: none; cursor: pointer; border-radius: 4px; }
  #rooms button.active { background: #dfe6f5; font-weight: 600; }
  main { display: flex; flex-direction: column; }
  #status { font-size: 13px; color: #5b6478; margin-bottom: 8px; }
  #status b { color: #1d2330; }
  #messages { flex: 1; overflow: auto; list-style: none; padding: 0; margin: 0; }
  #messages li { padding: 4px 0; border-bottom: 1px solid #eef0f4; }
  #messages .who { font-weight: 600; margin-right: 6px; }
  #messages .sys { color: #8a92a5; font-style: italic; }
  form { display: flex; gap: 6px; margin-top: 8px; }
  input { flex: 1; padding: 8px; border: 1px solid #c9cfdb; border-radius: 4px; }
  button[type=submit] { padding: 8px 14px; border: 0; border-radius: 4px; background: #2f6fed; color: #fff; }
  #online li { list-style: none; padding: 2px 0; }
  #online { padding: 0; margin: 0; }
</style>
</head>
<body>
<aside><h2>Rooms</h2><div id="rooms"></div></aside>
<main>
  <div id="status">state: <b id="state">connecting</b> · transport: <b id="transport">–</b> · room: <b id="room"></b></div>
  <ul id="messages"></ul>
  <form id="send"><input id="text" autocomplete="off" placeholder="Say something"><button type="submit">Send</button></form>
</main>
<aside><h2>Online</h2><ul id="online"></ul></aside>
<script type="module">
import { Client } from "/natsedge-client.js";

const q = new URLSearchParams(location.search);
const ns = q.get("ns") || "public";
const name = q.get("name") || "guest-" + Math.random().toString(36).slice(2, 6);
const rooms = ["lobby", "random", "help"];
const transports = q.get("transports") ? q.get("transports").split(",") : undefined;
const urls = q.get("urls") ? q.get("urls").split(",") : location.origin;
const client = new Client(urls, { token: q.get("token") || undefined, ...(transports ? { transports } : {}) });
const $ = (id) => document.getElementById(id);
let sub;
let room;

const show = () => {
  $("state").textContent = client.state;
  $("transport").textContent = client.transport || "–";
};
client.on("connecting", show).on("connected", show).on("disconnected", show);

function line(html, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  li.innerHTML = html;
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

async function refreshOnline() {
  try {
    const members = await sub.presence();
    $("online").innerHTML = Object.entries(members)
      .map(([id, m]) => {
        const who = (m.info && m.info.name) || m.user || "guest " + id.slice(0, 4);
        return "<li>" + esc(who) + (id === client.clientId ? " (you)" : "") + "</li>";
      })
      .join("");
    $("online").dataset.count = String(Object.keys(members).length);
  } catch { /* presence is best effort in the demo */ }
}

function join(r) {
  if (sub) sub.unsubscribe();
  room = r;
  $("room").textContent = r;
  $("messages").innerHTML = "";
  for (const b of $("rooms").children) b.classList.toggle("active", b.textContent === r);
  sub = client.subscribe(ns + "." + r, {
    onPublication: (p) => {
      // Chat messages are {name, text}; anything else (a backend's data) is shown as JSON.
      const chat = p.data && typeof p.data === "object" && typeof p.data.text === "string";
      const who = chat ? p.data.name || "anonymous" : "backend";
      line('<span class="who">' + esc(who) + '</span><span class="text">' + esc(chat ? p.data.text : JSON.stringify(p.data)) + "</span>");
    },
    onJoin: () => refreshOnline(),
    onLeave: () => refreshOnline(),
    // After every (re)subscribe: long-poll clients get no join/leave pushes, so look now.
    onSubscribed: () => refreshOnline(),
    onUnrecovered: () => line("some messages could not be recovered", "sys"),
    onError: (err) => line("room unavailable: " + esc(err.message), "sys"),
  });
}
// Long-poll gets no join/leave pushes: refresh the online list now and then instead.
setInterval(() => {
  if (sub && client.transport === "longpoll") refreshOnline();
}, 5000);

for (const r of rooms) {
  const b = document.createElement("button");
  b.textContent = r;
  b.onclick = () => join(r);
  $("rooms").append(b);
}
$("send").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  try {
    await sub.publish({ name, text });
  } catch (err) {
    line("not sent: " + esc(err.message), "sys");
  }
};
window.natsedge = { client, get sub() { return sub; } };
join(q.get("room") || rooms[0]);
show();
</script>
</body>
</html>
`;

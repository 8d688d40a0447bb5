// The relay's dashboard: polls /api/status (same origin, the relay's own HTTP port) and draws
// what it says. No third-party code; every asset comes from the relay.


const POLL_MS = 2000;
const KEPT = 90; // samples in the charts (3 minutes)
const UNITS = 1e9; // base units per TOP

const $ = (id) => document.getElementById(id);
const samples = [];
let token = sessionStorage.getItem("toprelay-token") || "";

// A token may come in the address's fragment (#token=…), which browsers never send.
(function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("toprelay-token", token);
    window.history.replaceState(null, "", location.pathname);
  }
})();

function set(id, text) {
  const el = $(id);
  if (el && el.textContent !== String(text)) el.textContent = String(text);
}

function count(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function inTop(units) {
  if (typeof units !== "number") return "–";
  return (units / UNITS).toLocaleString("en-US", { maximumFractionDigits: 6 }) + " TOP";
}

function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60, s = secs % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// The series charted: what each sample counts, and how a rate of it reads.
const SERIES = [
  { key: "msg", label: "Messages", unit: "/s", of: (s) => s.messages_received },
  { key: "pipe", label: "Pipes", unit: "B/s", of: (s) => s.pipe_bytes },
  { key: "vpn", label: "VPN", unit: "pkt/s", of: (s) => s.services.vpn_packets },
  { key: "cdn", label: "CDN", unit: "B/s",
    of: (s) => s.services.cdn_http_bytes + s.services.cdn_quic_bytes },
  { key: "billed", label: "Billed", unit: "B/s",
    of: (s) => Object.values(s.services.billed_bytes || {}).reduce((a, b) => a + b, 0) },
];

function rate(series, i) {
  const a = samples[i - 1], b = samples[i];
  const secs = (b.at - a.at) / 1000;
  return secs > 0 ? Math.max(0, (series.of(b.status) - series.of(a.status)) / secs) : 0;
}

function drawCharts() {
  const box = $("charts");
  for (const series of SERIES) {
    let chart = $("chart-" + series.key);
    if (!chart) {
      chart = document.createElement("div");
      chart.className = "chart";
      chart.id = "chart-" + series.key;
      chart.innerHTML = '<div class="label"><span></span><span class="now"></span></div><canvas></canvas>';
      chart.querySelector("span").textContent = series.label;
      box.appendChild(chart);
    }
    const rates = [];
    for (let i = 1; i < samples.length; i++) rates.push(rate(series, i));
    const now = rates.length ? rates[rates.length - 1] : 0;
    const shown = series.unit === "B/s" ? bytes(now) + "/s" : now.toFixed(1) + " " + series.unit;
    chart.querySelector(".now").textContent = shown;
    const canvas = chart.querySelector("canvas");
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, canvas.clientWidth * ratio);
    canvas.height = Math.max(1, canvas.clientHeight * ratio);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const max = Math.max(1e-9, ...rates);
    ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--line").trim() || "#2f6fdf";
    ctx.lineWidth = 2 * ratio;
    // The baseline, then the rates (a single sample is a dot).
    ctx.globalAlpha = 0.3;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(0, canvas.height - ratio, canvas.width, ratio);
    ctx.globalAlpha = 1;
    if (rates.length === 1) {
      const y = canvas.height - 2 * ratio - ((canvas.height - 4 * ratio) * rates[0]) / max;
      ctx.fillRect(0, y - 2 * ratio, 4 * ratio, 4 * ratio);
    }
    ctx.beginPath();
    rates.forEach((r, i) => {
      const x = (canvas.width * i) / Math.max(1, KEPT - 2);
      const y = canvas.height - 2 * ratio - ((canvas.height - 4 * ratio) * r) / max;
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

function render(s) {
  set("relay-id", s.id);
  set("version", "v" + s.version);
  set("addr", s.addr);
  set("uptime", duration(s.uptime_secs));
  set("reachability", "reachability: " + (s.control ? s.control.reachability : "off"));
  set("sessions", count(s.sessions));
  set("links", count(s.links.length));
  set("known", count(s.known_relays.length));
  set("messages-received", count(s.messages_received));
  set("messages-delivered", count(s.messages_delivered));
  set("messages-stored", count(s.messages_stored));
  set("messages-rejected", count(s.messages_rejected));
  set("mailbox", `${count(s.mailbox.messages)} (${bytes(s.mailbox.bytes)})`);
  set("pipes", `${count(s.pipes_opened)} (${bytes(s.pipe_bytes)})`);
  const l = s.ledger;
  if (l) {
    set("balance", inTop(l.balance));
    set("stake", inTop(l.stake));
    set("registered", l.registered ? "yes" : "no");
    set("earned", inTop(l.fees_earned));
    set("burned", inTop(l.fees_burned));
    set("receipts", count(l.receipts_taken));
    set("pending", `${count(l.pending_receipts)} (${inTop(l.pending_amount)})`);
    set("settle-soon", l.pending_worth_settling ? "yes" : "no");
    set("chain", l.chain);
    set("height", count(l.height));
    set("finalized", count(l.finalized));
    set("epoch", count(l.epoch));
    set("validators", count(l.validators.length));
    set("role", l.validator ? "validator" : "follower");
  } else {
    for (const id of ["balance", "stake", "registered", "earned", "burned", "receipts", "pending",
      "settle-soon", "chain", "height", "finalized", "epoch", "validators", "role"]) set(id, "no chain");
  }
  const v = s.services;
  set("vpn-tunnels", count(v.vpn_tunnels));
  set("vpn-forwards", count(v.vpn_forwards));
  set("vpn-packets", count(v.vpn_packets));
  set("vpn-dropped", count(v.vpn_dropped));
  set("cdn-cache", `${bytes(v.cdn_cached_bytes)} of ${bytes(v.cdn_cache_capacity)}`);
  const chunks = v.cdn_local_chunks + v.cdn_peer_chunks;
  set("cdn-hits", chunks ? ((100 * v.cdn_local_chunks) / chunks).toFixed(1) + " %" : "–");
  set("cdn-http", bytes(v.cdn_http_bytes));
  set("cdn-quic", bytes(v.cdn_quic_bytes));
  renderErrors(s.recent_errors || []);
}

function renderErrors(errors) {
  const list = $("errors");
  const key = errors.map((e) => e.time_ms + e.message).join("|");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren();
  if (!errors.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none";
    list.appendChild(li);
  }
  for (const e of errors.slice().reverse()) {
    const li = document.createElement("li");
    li.className = e.level;
    li.textContent = `${new Date(e.time_ms).toLocaleTimeString()} ${e.level} ${e.target}: ${e.message}`;
    list.appendChild(li);
  }
}

async function poll() {
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch("/api/status", { headers, cache: "no-store" });
    if (r.status === 401) {
      $("token-form").hidden = false;
      set("relay-id", "this relay's API needs its token");
      return;
    }
    if (!r.ok) throw new Error("status " + r.status);
    const s = await r.json();
    $("token-form").hidden = true;
    $("problem").hidden = true;
    samples.push({ at: Date.now(), status: s });
    while (samples.length > KEPT) samples.shift();
    render(s);
    drawCharts();
    set("updated", "updated " + new Date().toLocaleTimeString());
  } catch (e) {
    $("problem").hidden = false;
    set("problem", "cannot reach the relay: " + e.message);
  }
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("toprelay-token", token);
  poll();
});

poll();
setInterval(poll, POLL_MS);

// The system panel: queues, live workers, LLM latency, keys, cache, drops and webhooks,
// from GET /api/system every few seconds.

import { getJson } from "./api.js";
import { el, timeOf } from "./dom.js";

const REFRESH_MS = 4000;

export function startSystemPanel() {
  const panel = document.getElementById("system-panel");
  const refresh = async () => {
    if (document.hidden) return;  // nobody looking: spare the fleet the pings
    try {
      render(panel, await getJson("/api/system"));
    } catch (error) {
      panel.querySelector(".system-error").textContent = `System figures unavailable: ${error.message}`;
    }
  };
  refresh();
  setInterval(refresh, REFRESH_MS);
}

function render(panel, system) {
  panel.replaceChildren(
    card("Queues", table(["queue", "waiting"], Object.entries(system.queues))),
    workersCard(system.workers),
    llmCard(system.llm),
    card("LLM keys", system.keys.length
      ? table(["key", "state", "req/min", "in flight"], system.keys.map((k) => [
        k.key, k.detail ? `${k.state}: ${k.detail}` : k.state, `${k.requests_last_minute}/${k.rpm_limit}`, k.in_flight]))
      : el("p", { className: "empty", text: "No LLM keys configured." })),
    card("Frames dropped", countsTable(system.dropped_frames, "reason", "no frames dropped")),
    card("Webhooks", countsTable(system.webhooks, "outcome", "no deliveries")),
    el("p", { className: "system-error error", role: "alert" }),
  );
  panel.dataset.updatedAt = String(Date.now());
}

function workersCard(workers) {
  const summary = workers.error
    ? `${workers.error}`
    : `${workers.count} alive (asked ${timeOf(workers.checked_at)})`;
  return card("Workers",
    el("p", { className: `workers-alive ${workers.count ? "" : "none"}`, text: summary }),
    el("ul", { className: "worker-names" }, ...workers.alive.map((name) => el("li", { text: name }))));
}

function llmCard(llm) {
  const seconds = (value) => (value === null ? "–" : `${value.toFixed(2)} s`);
  const rate = llm.cache_hit_rate === null ? "–" : `${Math.round(llm.cache_hit_rate * 100)} %`;
  return card(llm.enabled ? "LLM" : "LLM (off: rules only)",
    table(["priority", "p50", "p95", "n"], ["high", "low"].map((priority) => {
      const figures = llm.latency_s[priority];
      return [priority, seconds(figures.p50), seconds(figures.p95), figures.count];
    })),
    el("p", { className: "cache-rate", text: `scene cache hit rate: ${rate}` }),
    el("p", { className: "outcomes", text: Object.entries(llm.outcomes).map(([k, v]) => `${k} ${v}`).join(" · ") }));
}

function countsTable(counts, label, none) {
  const rows = Object.entries(counts);
  if (!rows.some(([, count]) => count > 0)) return el("p", { className: "empty", text: none });
  return table([label, "count"], rows);
}

function card(title, ...content) {
  return el("section", { className: "card" }, el("h3", { text: title }), ...content);
}

function table(headings, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headings.map((text) => el("th", { text })))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((text) => el("td", { text }))))));
}

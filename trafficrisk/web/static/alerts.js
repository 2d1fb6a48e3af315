// The alert feed: newest first, each with its evidence thumbnail, the LLM's reason (as
// text: it is model output), its state and the buttons that move it on. Live `alert`
// events add new alerts and update known ones in place. A conflict's alert also shows
// what the LLM made of the conflict (verification.js).

import { alertPath, getJson, query, request } from "./api.js";
import { RISK_LEVELS, el, timeOf } from "./dom.js";
import { verificationOf, verificationView } from "./verification.js";

const SHOWN = 50;
const items = new Map();
let filters = { camera: "", level: "", state: "", verification: "" };

const list = () => document.getElementById("alerts");

export async function loadAlerts() {
  const alerts = await getJson(`/api/alerts${query({ ...filters, limit: SHOWN })}`);
  items.clear();
  list().replaceChildren();
  for (const alert of alerts) list().append(itemFor(alert));
  const note = document.getElementById("no-alerts");
  note.textContent = note.dataset.text;
  showEmptyNote();
}

export function setUpFilters(form) {
  form.addEventListener("change", () => {
    filters = Object.fromEntries(new FormData(form));
    loadAlerts().catch((error) => showFeedError(error.message));
  });
}

// A new alert, or a known one whose state changed.
export function onAlert(alert) {
  const known = items.get(alert.alert_id);
  if (known) {
    if (matchesFilters(alert)) render(known, alert);
    else forget(alert.alert_id);
  } else if (matchesFilters(alert)) {
    list().prepend(itemFor(alert));
    while (list().children.length > SHOWN) forget(list().lastElementChild.dataset.alertId);
  }
  showEmptyNote();
}

function matchesFilters(alert) {
  const rank = (level) => RISK_LEVELS.indexOf(level);
  return (!filters.camera || alert.camera_id === filters.camera)
    && (!filters.level || rank(alert.risk_level) >= rank(filters.level))
    && (!filters.state || alert.state === filters.state)
    && (!filters.verification || alert.verification === filters.verification);
}

function forget(alertId) {
  items.get(alertId)?.remove();
  items.delete(alertId);
}

function itemFor(alert) {
  const item = el("li");
  items.set(alert.alert_id, item);
  render(item, alert);
  return item;
}

function render(item, alert) {
  const state = alert.state ?? "open";
  item.className = `alert ${alert.risk_level} state-${state}`;
  item.dataset.alertId = alert.alert_id;
  item.dataset.state = state;
  // null: not a conflict's alert, nothing to verify.
  const verification = alert.verification == null ? null : verificationOf(alert.verdict, alert.verification);
  if (verification) item.dataset.verification = verification;
  else delete item.dataset.verification;
  const head = el("div", { className: "alert-head" },
    el("span", { className: `level-chip ${alert.risk_level}`, text: alert.risk_level.toUpperCase() }),
    el("span", { className: "camera", text: alert.camera_id }),
    el("time", { text: timeOf(alert.created_at), datetime: new Date(alert.created_at * 1000).toISOString() }));
  const body = el("div", { className: "alert-body" },
    head,
    el("div", { className: "pattern", text: `${alert.pattern ?? "alert"} · ${alert.risk_type} · ${alert.source}` }),
    el("p", { className: "reason", text: alert.reason }),
    verification && verificationView(alert.verdict, alert.verification),
    el("div", { className: "alert-actions" },
      el("span", { className: `state ${state}`, text: state }),
      actionButton(alert, "acknowledge", "Acknowledge", state === "open"),
      actionButton(alert, "resolve", "Resolve", state !== "resolved"),
      clipLink(alert)),
    el("p", { className: "alert-error error", role: "alert" }));
  item.replaceChildren(thumbnail(alert), body);
}

// The group's crop; the whole frame when there is no crop (or it fails to load).
function thumbnail(alert) {
  const evidence = alert.evidence ?? [];
  const sources = ["crop", "frame"].filter((kind) => evidence.includes(kind))
    .map((kind) => `${alertPath(alert.alert_id)}/${kind}.jpg`);
  if (!sources.length) return el("div", { className: "thumb none", text: "no image" });
  const img = el("img", { className: "thumb", alt: `evidence of ${alert.camera_id}`, loading: "lazy" });
  img.addEventListener("error", () => {
    sources.shift();
    if (sources.length) img.src = sources[0];
    else img.replaceWith(el("div", { className: "thumb none", text: "image expired" }));
  });
  img.src = sources[0];
  return img;
}

function clipLink(alert) {
  if (!(alert.evidence ?? []).includes("clip")) return null;
  return el("a", { className: "clip", href: `${alertPath(alert.alert_id)}/clip.webm`, target: "_blank",
    rel: "noopener", text: "clip" });
}

function actionButton(alert, action, label, enabled) {
  const button = el("button", { type: "button", className: action, text: label, disabled: !enabled });
  button.addEventListener("click", () => changeState(alert.alert_id, action, button));
  return button;
}

async function changeState(alertId, action, button) {
  const item = items.get(alertId);
  button.disabled = true;
  try {
    onAlert(await request("POST", `${alertPath(alertId)}/${action}`));
  } catch (error) {
    button.disabled = false;
    if (item) item.querySelector(".alert-error").textContent = error.message;
    // 409: someone moved it on meanwhile; show where it stands now (the message stays).
    if (error.status === 409) refreshAlert(alertId, error.message);
  }
}

async function refreshAlert(alertId, message) {
  try {
    onAlert(await getJson(alertPath(alertId)));
    const item = items.get(alertId);
    if (item) item.querySelector(".alert-error").textContent = message;
  } catch {
    // gone (past its retention): the error already shown says enough
  }
}

function showEmptyNote() {
  document.getElementById("no-alerts").hidden = list().children.length > 0;
}

function showFeedError(message) {
  document.getElementById("no-alerts").textContent = `Alerts unavailable: ${message}`;
}

// The camera filter offers the cameras of the grid.
export function offerCameras(ids) {
  const select = document.querySelector("#alert-filters select[name=camera]");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "all cameras" }),
    ...ids.map((id) => el("option", { value: id, text: id })));
  select.value = ids.includes(chosen) ? chosen : "";
  if (select.value !== chosen) select.form.dispatchEvent(new Event("change"));
}

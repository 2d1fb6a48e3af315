// The conflict feed: conflict events, newest first, with their kind, severity and
// measures. Live `conflict` events (opened, escalated, ended) add new ones and update
// known ones in place. Measures on an approximate scale (fitted from pedestrians,
// not calibrated) say so. A verified conflict shows the LLM's verdict (verification.js).

import { getJson } from "./api.js";
import { el, timeOf } from "./dom.js";
import { verificationOf, verificationView } from "./verification.js";

const SHOWN = 30;
const items = new Map();
// A conflict's verdict, once it came: a later version sent without one keeps showing it.
const verdicts = new Map();

const list = () => document.getElementById("conflicts");

export async function loadConflicts() {
  const conflicts = await getJson(`/api/conflicts?limit=${SHOWN}`);
  items.clear();
  verdicts.clear();
  list().replaceChildren(...conflicts.map(itemFor));
  showEmptyNote();
}

export function onConflict(conflict) {
  const known = items.get(conflict.conflict_id);
  if (known) render(known, conflict);
  else {
    list().prepend(itemFor(conflict));
    while (list().children.length > SHOWN) {
      items.delete(list().lastElementChild.dataset.conflictId);
      verdicts.delete(list().lastElementChild.dataset.conflictId);
      list().lastElementChild.remove();
    }
  }
  showEmptyNote();
}

function itemFor(conflict) {
  const item = el("li");
  items.set(conflict.conflict_id, item);
  render(item, conflict);
  return item;
}

const seconds = (value) => (value === null || value === undefined ? null : `${value.toFixed(1)} s`);

export function measures(conflict) {
  return [
    seconds(conflict.min_ttc_s) && `TTC ${seconds(conflict.min_ttc_s)}`,
    seconds(conflict.pet_s) && `PET ${seconds(conflict.pet_s)}`,
    conflict.max_drac !== null && conflict.max_drac !== undefined && `DRAC ${conflict.max_drac.toFixed(1)} m/s²`,
    `${conflict.first_label} ${(conflict.first_speed_mps ?? 0).toFixed(1)} m/s`,
    `${conflict.second_label} ${(conflict.second_speed_mps ?? 0).toFixed(1)} m/s`,
  ].filter(Boolean).join(" · ");
}

function render(item, conflict) {
  if (conflict.verdict) verdicts.set(conflict.conflict_id, conflict.verdict);
  const verdict = verdicts.get(conflict.conflict_id);
  const ended = conflict.change === "ended";
  item.className = `conflict ${conflict.severity}${ended ? " ended" : ""}`;
  item.dataset.conflictId = conflict.conflict_id;
  item.dataset.severity = conflict.severity;
  if (verdict) item.dataset.verification = verificationOf(verdict);
  else delete item.dataset.verification;
  const children = [
    el("div", { className: "conflict-head" },
      el("span", { className: `severity-chip ${conflict.severity}`, text: conflict.severity }),
      el("span", { className: "camera", text: conflict.camera_id }),
      el("time", { text: timeOf(conflict.start_at), datetime: new Date(conflict.start_at * 1000).toISOString() }),
      el("span", { className: "conflict-state", text: ended ? "ended" : "ongoing" })),
    el("div", { className: "kind", text: `${conflict.kind} · ${conflict.conflict_type}` }),
    el("div", { className: "measures", text: measures(conflict) }),
  ];
  if (verdict) children.push(verificationView(verdict));
  if (conflict.approximate) {
    children.push(el("div", { className: "approximate", text: "approximate scale (not calibrated)" }));
  }
  item.replaceChildren(...children);
}

function showEmptyNote() {
  document.getElementById("no-conflicts").hidden = list().children.length > 0;
}

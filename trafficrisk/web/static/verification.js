// What the LLM made of a conflict: a badge with the state word (unverified, confirmed,
// rejected, uncertain) and the model's reason beside it. The reason is model output,
// hostile for all we know: it only ever goes in as text (el sets textContent).

import { el } from "./dom.js";

export const VERIFICATIONS = ["unverified", "confirmed", "rejected", "uncertain"];

// The state a verdict stands for: a failed call (a fallback) verified nothing.
export function verificationOf(verdict, stated) {
  if (verdict?.source === "fallback") return "unverified";
  const state = stated ?? verdict?.verification ?? "unverified";
  return VERIFICATIONS.includes(state) ? state : "unverified";
}

// With the LLM off (the page's badge says so) no verdict is coming.
const pendingText = () => (document.querySelector(".badge.llm-off")
  ? "no LLM configured: not verified" : "waiting for the model's verdict");

// `.verification[data-verification=<state>]` holding `.verification-badge.<state>` and
// `.verification-reason` (with `.pending` while there is no verdict yet).
export function verificationView(verdict, stated) {
  const state = verificationOf(verdict, stated);
  const reason = verdict
    ? el("span", { className: "verification-reason", text: verdict.reason ?? "" })
    : el("span", { className: "verification-reason pending", text: pendingText() });
  return el("div", { className: "verification", "data-verification": state },
    el("span", { className: `verification-badge ${state}`, text: state,
      title: verdict?.source === "fallback" ? "the verification failed" : "the model's verification" }),
    reason);
}

// Per-camera charts over the last hour, on a plain canvas (no chart library: nothing
// is fetched from the internet at run time). Top: frames per minute stacked by risk
// level. Bottom: road users per minute by class. `stats` events update a minute.

import { getJson, query } from "./api.js";
import { RISK_COLOURS, RISK_LEVELS, el } from "./dom.js";

const WINDOW_MIN = 60;
const CLASS_COLOURS = {
  person: "#4fc3f7", bicycle: "#aed581", motorcycle: "#ffb74d", car: "#f06292", bus: "#ba68c8", truck: "#fff176",
};
const OTHER_CLASS_COLOUR = "#b0bec5";

// camera id -> Map(minute start -> minute)
const series = new Map();
const canvases = new Map();

export function attachChart(cameraId, figure) {
  canvases.set(cameraId, figure);
  drawChart(cameraId);
}

export function detachChart(cameraId) {
  canvases.delete(cameraId);
  series.delete(cameraId);
}

export async function loadStats(cameraId) {
  try {
    const stats = await getJson(`/api/stats${query({ camera: cameraId, window: WINDOW_MIN })}`);
    series.set(cameraId, new Map(stats.minutes.map((minute) => [minute.start, minute])));
  } catch (error) {
    series.delete(cameraId);
    canvases.get(cameraId)?.querySelector(".chart-legend").replaceChildren(`No counts: ${error.message}`);
    return;
  }
  drawChart(cameraId);
}

// Charts waiting to be drawn: a busy fleet sends a `stats` event per frame result, so
// each chart is drawn at most once per animation frame, however many arrived.
const stale = new Set();

export function onStats({ camera_id: cameraId, minute }) {
  if (!canvases.has(cameraId)) return;
  const minutes = series.get(cameraId) ?? new Map();
  minutes.set(minute.start, minute);
  series.set(cameraId, minutes);
  if (stale.size === 0) requestAnimationFrame(drawStale);
  stale.add(cameraId);
}

function drawStale() {
  for (const cameraId of stale) drawChart(cameraId);
  stale.clear();
}

export function redrawCharts() {
  for (const cameraId of canvases.keys()) drawChart(cameraId);
}

// The last WINDOW_MIN minutes, oldest first, with empty minutes where nothing was counted.
function lastHour(minutes) {
  const now = Math.floor(Date.now() / 60000) * 60;
  const starts = Array.from({ length: WINDOW_MIN }, (_, i) => now - (WINDOW_MIN - 1 - i) * 60);
  for (const start of minutes.keys()) if (start < starts[0]) minutes.delete(start);
  return starts.map((start) => minutes.get(start) ?? { start, frames: 0, levels: {}, classes: {}, alerts: 0 });
}

function drawChart(cameraId) {
  const figure = canvases.get(cameraId);
  if (!figure || !series.has(cameraId)) return;
  const canvas = figure.querySelector("canvas");
  if (!canvas.clientWidth) return;
  canvas.width = canvas.clientWidth;
  canvas.height = canvas.clientHeight;
  const ctx = canvas.getContext("2d");
  const minutes = lastHour(series.get(cameraId));
  const classes = classesSeen(minutes);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "10px sans-serif";
  const split = Math.round(canvas.height * 0.55);
  drawLevelBars(ctx, minutes, { top: 12, bottom: split - 2, width: canvas.width });
  drawClassLines(ctx, minutes, classes, { top: split + 12, bottom: canvas.height - 2, width: canvas.width });
  figure.dataset.minutes = String(minutes.filter((m) => m.frames).length);
  figure.dataset.frames = String(minutes.reduce((sum, m) => sum + m.frames, 0));
  showLegend(figure, classes, minutes);
}

function classesSeen(minutes) {
  const seen = new Set();
  for (const minute of minutes) for (const name of Object.keys(minute.classes ?? {})) seen.add(name);
  return [...seen].sort();
}

function drawLevelBars(ctx, minutes, area) {
  const peak = Math.max(1, ...minutes.map((m) => m.frames));
  const barWidth = area.width / minutes.length;
  const height = area.bottom - area.top;
  minutes.forEach((minute, i) => {
    let y = area.bottom;
    for (const level of RISK_LEVELS) {
      const h = ((minute.levels?.[level] ?? 0) / peak) * height;
      ctx.fillStyle = RISK_COLOURS[level];
      ctx.fillRect(i * barWidth, y - h, Math.max(1, barWidth - 1), h);
      y -= h;
    }
  });
  axisNote(ctx, `frames/min (max ${peak}) by risk`, area);
}

function drawClassLines(ctx, minutes, classes, area) {
  const peak = Math.max(1, ...minutes.flatMap((m) => Object.values(m.classes ?? {})));
  const step = area.width / Math.max(1, minutes.length - 1);
  const height = area.bottom - area.top;
  ctx.lineWidth = 1.5;
  for (const name of classes) {
    ctx.strokeStyle = CLASS_COLOURS[name] ?? OTHER_CLASS_COLOUR;
    ctx.beginPath();
    minutes.forEach((minute, i) => {
      const y = area.bottom - ((minute.classes?.[name] ?? 0) / peak) * height;
      if (i) ctx.lineTo(i * step, y); else ctx.moveTo(0, y);
    });
    ctx.stroke();
  }
  axisNote(ctx, `road users/min (max ${peak}) by class`, area);
}

function axisNote(ctx, text, area) {
  ctx.fillStyle = "#9aa0a6";
  ctx.fillText(text, 2, area.top - 2);
}

function showLegend(figure, classes, minutes) {
  const alerts = minutes.reduce((sum, m) => sum + (m.alerts ?? 0), 0);
  const swatch = (name, colour) => {
    const mark = el("i");
    mark.style.background = colour; // through the CSSOM: the page's CSP allows no style attributes
    return el("span", { className: "swatch" }, mark, name);
  };
  figure.querySelector(".chart-legend").replaceChildren(
    ...RISK_LEVELS.map((level) => swatch(level, RISK_COLOURS[level])),
    ...classes.map((name) => swatch(name, CLASS_COLOURS[name] ?? OTHER_CLASS_COLOUR)),
    el("span", { className: "alerts-count", text: `${alerts} alert${alerts === 1 ? "" : "s"} in the last hour` }));
}

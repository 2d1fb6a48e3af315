// Live dashboard: one tile per camera, boxes and group outlines drawn over the frame,
// and an alert list. Everything from the server is inserted as text, never as HTML.
"use strict";

const RISK_COLOURS = { none: "#9aa0a6", low: "#2e9d4f", medium: "#e8a317", high: "#d93025" };
const tiles = new Map();

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function tileFor(camera) {
  if (tiles.has(camera.id)) return tiles.get(camera.id);
  const grid = document.getElementById("grid");
  grid.querySelector(".empty")?.remove();
  const node = document.getElementById("tile-template").content.firstElementChild.cloneNode(true);
  node.dataset.camera = camera.id;
  node.querySelector(".name").textContent = camera.name || camera.id;
  const tile = { node, img: node.querySelector("img"), canvas: node.querySelector("canvas"), result: null };
  tile.img.addEventListener("load", () => draw(tile));
  grid.appendChild(node);
  tiles.set(camera.id, tile);
  return tile;
}

function showStatus(status) {
  const tile = tiles.get(status.camera_id);
  if (!tile) return;
  const label = tile.node.querySelector(".status");
  label.textContent = status.reason ? `${status.state}: ${status.reason}` : status.state;
  label.className = `status ${status.state}`;
}

function showResult(result) {
  const tile = tiles.get(result.camera_id);
  if (!tile || (tile.result && tile.result.seq >= result.seq)) return;
  tile.result = result;
  tile.img.src = `/api/cameras/${encodeURIComponent(result.camera_id)}/frame.jpg?seq=${result.seq}`;
  const level = tile.node.querySelector(".level");
  level.textContent = `risk ${result.risk_level}`;
  level.style.background = RISK_COLOURS[result.risk_level];
  const time = new Date(result.captured_at * 1000).toLocaleTimeString();
  tile.node.querySelector(".meta").textContent =
    `${time} · ${result.detections.length} road users · ${result.groups.length} groups`;
}

function draw(tile) {
  const { img, canvas, result } = tile;
  if (!result) return;
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d");
  const sx = canvas.width / result.width, sy = canvas.height / result.height;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px sans-serif";
  ctx.lineWidth = 1.5;
  for (const d of result.detections) {
    ctx.strokeStyle = "#4fc3f7";
    ctx.strokeRect(d.box.x1 * sx, d.box.y1 * sy, (d.box.x2 - d.box.x1) * sx, (d.box.y2 - d.box.y1) * sy);
    label(ctx, `${d.label} ${Math.round(d.confidence * 100)}%`, d.box.x1 * sx, d.box.y1 * sy - 2, "#4fc3f7");
  }
  ctx.lineWidth = 3;
  for (const g of result.groups) {
    const colour = RISK_COLOURS[g.verdict.risk_level];
    const b = g.group.box;
    ctx.strokeStyle = colour;
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(b.x1 * sx - 4, b.y1 * sy - 4, (b.x2 - b.x1) * sx + 8, (b.y2 - b.y1) * sy + 8);
    ctx.setLineDash([]);
    label(ctx, `${g.verdict.risk_level} (${g.verdict.source})`, b.x1 * sx - 4, b.y2 * sy + 18, colour);
  }
}

// Text on a dark plate, so it stays readable over bright road and sky.
function label(ctx, text, x, y, colour) {
  const width = ctx.measureText(text).width + 6;
  ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
  ctx.fillRect(x, y - 12, width, 14);
  ctx.fillStyle = colour;
  ctx.fillText(text, x + 3, y - 1);
}

function addAlert(alert) {
  const list = document.getElementById("alerts");
  const item = document.createElement("li");
  item.className = `alert ${alert.risk_level}`;
  const head = document.createElement("div");
  head.className = "alert-head";
  head.textContent = `${alert.risk_level.toUpperCase()} · ${alert.camera_id} · ` +
    new Date(alert.created_at * 1000).toLocaleTimeString();
  const body = document.createElement("div");
  body.textContent = `${alert.risk_type}: ${alert.reason} [${alert.source}]`;
  item.append(head, body);
  list.prepend(item);
  document.getElementById("no-alerts")?.remove();
  while (list.children.length > 100) list.lastElementChild.remove();
}

async function loadCameras() {
  const cameras = await getJson("/api/cameras");
  for (const camera of cameras) {
    tileFor(camera);
    if (camera.status) showStatus(camera.status);
    try { showResult(await getJson(`/api/cameras/${encodeURIComponent(camera.id)}/latest`)); }
    catch (e) { /* no result yet */ }
  }
}

async function start() {
  await loadCameras();
  for (const alert of (await getJson("/api/alerts?limit=50")).reverse()) addAlert(alert);
  const socket = io({ transports: ["websocket", "polling"] });
  const connection = document.getElementById("connection");
  socket.on("connect", () => { connection.textContent = "live"; connection.className = "badge live"; });
  socket.on("disconnect", () => { connection.textContent = "reconnecting…"; connection.className = "badge"; });
  socket.on("frame_result", showResult);
  socket.on("alert", addAlert);
  socket.on("camera_status", async (status) => {
    if (!tiles.has(status.camera_id)) await loadCameras();
    showStatus(status);
  });
  window.addEventListener("resize", () => tiles.forEach(draw));
}

start();

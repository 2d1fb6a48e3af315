// The live grid: a tile per camera with its latest frame and, drawn over it, the camera's
// zones, each road user's trail, the boxes and the group outlines in their risk colour.

import { cameraPath } from "./api.js";
import { RISK_COLOURS, canvasLabel, canvasOver, fromTemplate, timeOf } from "./dom.js";

const TRAIL_POINTS = 20;
// A track unseen for this long (capture time) has left: its trail goes.
const TRAIL_FORGET_S = 5;
const BOX_COLOUR = "#4fc3f7";
const ZONE_COLOUR = "#ce93d8";

const tiles = new Map();
let tileActions = {};

// What the tiles' buttons do: { edit(cameraId), geometry(cameraId) }.
export function setTileActions(actions) {
  tileActions = actions;
}

export const cameraIds = () => [...tiles.keys()];
export const cameraOf = (id) => tiles.get(id)?.camera;
export const tileOf = (id) => tiles.get(id);

export function upsertCamera(camera) {
  const tile = tiles.get(camera.id) ?? createTile(camera);
  tile.camera = camera;
  tile.node.querySelector(".name").textContent = camera.name || camera.id;
  tile.node.classList.toggle("disabled", camera.enabled === false);
  if (camera.status) showStatus(camera.status);
  else if (camera.enabled === false) setStatusLabel(tile, "disabled", "");
  draw(tile);
  return tile;
}

function createTile(camera) {
  const grid = document.getElementById("grid");
  grid.querySelector(".empty")?.remove();
  const node = fromTemplate("tile-template");
  node.dataset.camera = camera.id;
  const tile = {
    camera, node, result: null, trails: new Map(),
    img: node.querySelector(".frame img"), canvas: node.querySelector(".frame canvas"),
  };
  tile.img.addEventListener("load", () => {
    node.dataset.seq = tile.img.dataset.seq;
    draw(tile);
  });
  node.querySelector(".edit-camera").addEventListener("click", () => tileActions.edit?.(camera.id));
  node.querySelector(".edit-geometry").addEventListener("click", () => tileActions.geometry?.(camera.id));
  setStatusLabel(tile, "connecting", "");
  grid.appendChild(node);
  tiles.set(camera.id, tile);
  return tile;
}

export function removeCamera(id) {
  tiles.get(id)?.node.remove();
  tiles.delete(id);
}

export function showStatus(status) {
  const tile = tiles.get(status.camera_id);
  if (tile) setStatusLabel(tile, status.state, status.reason);
}

function setStatusLabel(tile, state, reason) {
  const label = tile.node.querySelector(".status");
  label.textContent = reason ? `${state}: ${reason}` : state;
  label.className = `status ${state}`;
  tile.node.dataset.status = state;
}

export function showResult(result) {
  const tile = tiles.get(result.camera_id);
  if (!tile || (tile.result && tile.result.seq >= result.seq)) return;
  tile.result = result;
  updateTrails(tile, result);
  tile.img.dataset.seq = result.seq;
  tile.img.src = `${cameraPath(result.camera_id)}/frame.jpg?seq=${result.seq}`;
  const level = tile.node.querySelector(".level");
  level.textContent = `risk ${result.risk_level}`;
  level.style.background = RISK_COLOURS[result.risk_level];
  tile.node.querySelector(".meta").textContent =
    `${timeOf(result.captured_at)} · ${result.detections.length} road users · ${result.groups.length} groups`
    + ` · ${(result.conflicts ?? []).filter((c) => c.change !== "ended").length} conflicts`
    + (result.scale === "approximate" ? " · approximate scale" : "");
}

// The ground point (bottom centre of the box) of each tracked road user, newest last.
function updateTrails(tile, result) {
  for (const detection of result.detections) {
    if (detection.track_id === null || detection.track_id === undefined) continue;
    const trail = tile.trails.get(detection.track_id) ?? [];
    const { x1, x2, y2 } = detection.box;
    trail.push({ x: (x1 + x2) / 2, y: y2, t: result.captured_at });
    if (trail.length > TRAIL_POINTS) trail.shift();
    tile.trails.set(detection.track_id, trail);
  }
  for (const [trackId, trail] of tile.trails) {
    if (result.captured_at - trail.at(-1).t > TRAIL_FORGET_S) tile.trails.delete(trackId);
  }
}

export function redrawAll() {
  tiles.forEach(draw);
}

function draw(tile) {
  const { img, canvas, result } = tile;
  if (!result || !img.clientWidth) return;
  const { ctx, scale } = canvasOver(img, canvas, result.width, result.height, "11px sans-serif");
  drawZones(ctx, tile.camera.zones ?? [], scale);
  drawTrails(ctx, tile.trails, scale);
  drawBoxes(ctx, result.detections, scale);
  drawGroups(ctx, result.groups, scale);
  drawConflicts(ctx, result, scale);
}

// Each open conflict: a line between its two road users and a ring where they meet,
// in its severity's colour, with its shortest TTC (or PET).
function drawConflicts(ctx, result, scale) {
  const byTrack = new Map(result.detections.map((d) => [d.track_id, d]));
  ctx.save();
  ctx.lineWidth = 3;
  for (const conflict of result.conflicts ?? []) {
    if (conflict.change === "ended") continue;
    const colour = conflict.severity === "serious" ? RISK_COLOURS.high : RISK_COLOURS.medium;
    const ends = [byTrack.get(conflict.first_track), byTrack.get(conflict.second_track)].filter(Boolean)
      .map((d) => [((d.box.x1 + d.box.x2) / 2) * scale.x, d.box.y2 * scale.y]);
    ctx.strokeStyle = colour;
    if (ends.length === 2) tracePath(ctx, ends, false), ctx.stroke();
    const [x, y] = conflict.image_point ? [conflict.image_point[0] * scale.x, conflict.image_point[1] * scale.y]
      : ends[0] ?? [null, null];
    if (x === null) continue;
    ctx.beginPath();
    ctx.arc(x, y, 9, 0, 2 * Math.PI);
    ctx.stroke();
    const measure = conflict.min_ttc_s ?? conflict.pet_s;
    const name = conflict.min_ttc_s !== null && conflict.min_ttc_s !== undefined ? "TTC" : "PET";
    canvasLabel(ctx, `${conflict.severity} ${name} ${measure?.toFixed(1) ?? "?"} s`, x + 11, y - 4, colour);
  }
  ctx.restore();
}

export function drawZones(ctx, zones, scale) {
  ctx.save();
  ctx.lineWidth = 2;
  for (const zone of zones) {
    const points = zone.points.map(([x, y]) => [x * scale.x, y * scale.y]);
    // Set for each zone: the previous zone's label changed them.
    ctx.strokeStyle = ZONE_COLOUR;
    ctx.fillStyle = "rgba(206, 147, 216, 0.15)";
    ctx.setLineDash(zone.kind === "line" ? [10, 5] : []);
    tracePath(ctx, points, zone.kind !== "line");
    if (zone.kind !== "line") ctx.fill();
    ctx.stroke();
    canvasLabel(ctx, zone.name, points[0][0] + 2, points[0][1] - 3, ZONE_COLOUR);
  }
  ctx.restore();
}

export function tracePath(ctx, points, closed) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  if (closed) ctx.closePath();
}

// Each track in its own hue, older segments fainter.
function drawTrails(ctx, trails, scale) {
  ctx.save();
  ctx.lineWidth = 2.5;
  ctx.lineCap = "round";
  for (const [trackId, trail] of trails) {
    const hue = (trackId * 47) % 360;
    for (let i = 1; i < trail.length; i++) {
      ctx.strokeStyle = `hsla(${hue}, 90%, 60%, ${(i / (trail.length - 1)).toFixed(2)})`;
      ctx.beginPath();
      ctx.moveTo(trail[i - 1].x * scale.x, trail[i - 1].y * scale.y);
      ctx.lineTo(trail[i].x * scale.x, trail[i].y * scale.y);
      ctx.stroke();
    }
  }
  ctx.restore();
}

function drawBoxes(ctx, detections, scale) {
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = BOX_COLOUR;
  for (const d of detections) {
    const x = d.box.x1 * scale.x, y = d.box.y1 * scale.y;
    ctx.strokeRect(x, y, (d.box.x2 - d.box.x1) * scale.x, (d.box.y2 - d.box.y1) * scale.y);
    const track = d.track_id === null || d.track_id === undefined ? "" : ` #${d.track_id}`;
    canvasLabel(ctx, `${d.label}${track} ${Math.round(d.confidence * 100)}%`, x, y - 2, BOX_COLOUR);
  }
}

function drawGroups(ctx, groups, scale) {
  ctx.save();
  ctx.lineWidth = 3;
  ctx.setLineDash([6, 4]);
  for (const g of groups) {
    const colour = RISK_COLOURS[g.verdict.risk_level];
    const b = g.group.box;
    ctx.strokeStyle = colour;
    ctx.strokeRect(b.x1 * scale.x - 4, b.y1 * scale.y - 4, (b.x2 - b.x1) * scale.x + 8, (b.y2 - b.y1) * scale.y + 8);
    canvasLabel(ctx, `${g.verdict.risk_level} (${g.verdict.source})`, b.x1 * scale.x - 4, b.y2 * scale.y + 18, colour);
  }
  ctx.restore();
}

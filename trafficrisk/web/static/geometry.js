// Zones and calibration, drawn by clicking on the camera's latest frame. Points are kept
// in the frame's own pixels; saving PUTs the camera with its `zones` and `calibration`,
// and the API validates (a polygon needs 3 points, calibration 4 not on one line).

import { ApiError, cameraPath, getJson, request } from "./api.js";
import { canvasLabel, canvasOver } from "./dom.js";
import { drawZones, tracePath } from "./grid.js";

const CALIBRATION_POINTS = 4;
const DRAFT_COLOUR = "#ffeb3b";
const CALIBRATION_COLOUR = "#00e5ff";

const GRID_COLOUR = "rgba(255, 255, 255, 0.45)";

const draft = { camera: null, zones: [], points: [], image: [], ground: [], scale: null };
let onSaved = () => {};

const dialog = () => document.getElementById("geometry-dialog");
const form = () => document.getElementById("geometry-form");
const frame = () => dialog().querySelector(".geometry-frame img");
const canvas = () => dialog().querySelector(".geometry-frame canvas");
const mode = () => form().elements.mode.value;

export function setUpGeometryEditor(saved) {
  onSaved = saved;
  frame().addEventListener("load", () => { showHint(); redraw(); });
  frame().addEventListener("error", () => showError("No frame from this camera yet: zones and "
    + "calibration are drawn on a frame, so wait until it is online."));
  canvas().addEventListener("click", placePoint);
  form().addEventListener("submit", (event) => { event.preventDefault(); save(); });
  form().elements.mode.forEach((radio) => radio.addEventListener("change", () => { showHint(); redraw(); }));
  form().querySelector(".add-zone").addEventListener("click", addZone);
  form().querySelector(".undo-point").addEventListener("click", () => { draft.points.pop(); redraw(); });
  form().querySelector(".clear-calibration").addEventListener("click", () => {
    draft.image = [];
    draft.ground = [];
    renderCalibration();
    redraw();
  });
  form().querySelector(".cancel").addEventListener("click", () => dialog().close());
  window.addEventListener("resize", redraw);
}

export function openGeometryEditor(camera) {
  draft.camera = camera;
  draft.zones = (camera.zones ?? []).map((zone) => ({ ...zone }));
  draft.points = [];
  draft.image = (camera.calibration?.image_points ?? []).map(([x, y]) => [x, y]);
  draft.ground = (camera.calibration?.ground_points ?? []).map(([x, y]) => [String(x), String(y)]);
  draft.scale = null;
  form().reset();
  form().querySelector(".form-title").textContent = `Zones and calibration: ${camera.name || camera.id}`;
  loadScale(camera.id);
  showError("");
  renderZoneList();
  renderCalibration();
  dialog().showModal();
  // The latest frame, fetched fresh: points are placed in its pixels.
  frame().src = `${cameraPath(camera.id)}/frame.jpg?t=${Date.now()}`;
}

function placePoint(event) {
  const img = frame();
  if (!img.naturalWidth) return;
  const x = Math.round((event.offsetX / img.clientWidth) * img.naturalWidth);
  const y = Math.round((event.offsetY / img.clientHeight) * img.naturalHeight);
  if (mode() !== "calibration") draft.points.push([x, y]);
  else if (draft.image.length < CALIBRATION_POINTS) {
    draft.image.push([x, y]);
    renderCalibration();
  } else {
    showError("Four calibration points are placed: clear the calibration to place them again.");
  }
  redraw();
}

function pendingZone() {
  const classes = form().elements.zone_classes.value.split(",").map((c) => c.trim()).filter(Boolean);
  const kind = mode() === "line" ? "line" : "polygon";
  return { name: form().elements.zone_name.value.trim(), kind, points: draft.points, classes };
}

function addZone() {
  if (!draft.points.length) {
    showError("Click on the frame to place the zone's points first.");
    return;
  }
  draft.zones.push(pendingZone());
  draft.points = [];
  form().elements.zone_name.value = "";
  form().elements.zone_classes.value = "";
  showError("");
  renderZoneList();
  redraw();
}

function renderZoneList() {
  const list = form().querySelector(".zone-list");
  list.replaceChildren(...draft.zones.map((zone, index) => {
    const item = document.createElement("li");
    const classes = zone.classes?.length ? ` (${zone.classes.join(", ")})` : "";
    item.append(`${zone.name} · ${zone.kind ?? "polygon"}, ${zone.points.length} points${classes} `);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => { draft.zones.splice(index, 1); renderZoneList(); redraw(); });
    item.append(remove);
    return item;
  }));
}

// One row per calibration point: where it was clicked, and its ground coordinates as typed.
function renderCalibration() {
  const rows = Array.from({ length: CALIBRATION_POINTS }, (_, i) => {
    const row = document.createElement("tr");
    const image = draft.image[i];
    row.append(cell(String(i + 1)), cell(image ? `${image[0]}, ${image[1]}` : "click on the frame"));
    for (const axis of [0, 1]) {
      const input = document.createElement("input");
      Object.assign(input, { type: "text", inputMode: "decimal", name: `ground_${axis ? "y" : "x"}_${i}`,
        value: draft.ground[i]?.[axis] ?? "" });
      input.setAttribute("aria-label", `point ${i + 1} ground ${axis ? "y" : "x"} in metres`);
      input.addEventListener("input", () => {
        draft.ground[i] = draft.ground[i] ?? ["", ""];
        draft.ground[i][axis] = input.value;
      });
      row.append(cell(input));
    }
    return row;
  });
  form().querySelector(".calibration-editor tbody").replaceChildren(...rows);
}

function cell(content) {
  const td = document.createElement("td");
  td.append(content);
  return td;
}

// null when nothing is set; else everything as typed, for the API to judge.
function calibrationFromDraft() {
  const typed = draft.ground.some((point) => point?.some((value) => value.trim() !== ""));
  if (!draft.image.length && !typed) return null;
  const number = (text) => (text?.trim() ? Number(text) : null);
  return {
    image_points: draft.image,
    ground_points: Array.from({ length: CALIBRATION_POINTS }, (_, i) => [
      number(draft.ground[i]?.[0]), number(draft.ground[i]?.[1])]),
  };
}

async function save() {
  const { status, ...camera } = draft.camera;
  const zones = draft.points.length ? [...draft.zones, pendingZone()] : draft.zones;
  const button = form().querySelector(".save");
  button.disabled = true;
  try {
    const saved = await request("PUT", cameraPath(camera.id),
      { ...camera, zones, calibration: calibrationFromDraft() });
    dialog().close();
    onSaved(saved);
  } catch (error) {
    showError(error instanceof ApiError ? error.message : `Not saved: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function showHint() {
  const hints = {
    polygon: "Click the corners of the zone, name it, then Add zone.",
    line: "Click the two ends of the counting line, name it, then Add zone.",
    calibration: "Click four points on the road, then type where each lies on the ground, in metres.",
  };
  form().querySelector(".hint").textContent = hints[mode()];
}

function showError(message) {
  form().querySelector(".form-error").textContent = message;
}

// How the camera's measures are scaled: its calibration, or the scale fitted from the
// pedestrians it has seen, drawn as a ground grid so its perspective can be judged.
async function loadScale(cameraId) {
  const info = form().querySelector(".scale-info");
  info.textContent = "Scale: loading…";
  try {
    draft.scale = await getJson(`${cameraPath(cameraId)}/scale`);
    info.textContent = describeScale(draft.scale);
  } catch (error) {
    info.textContent = `Scale: ${error.message}`;
  }
  redraw();
}

export function describeScale(scale) {
  if (!scale.approximate) return "Scale: calibrated (the four points below); grid lines every "
    + `${gridStep(scale)} m on the ground.`;
  const across = Object.entries(scale.metres_per_pixel_across)
    .map(([row, metres]) => `${(metres * 100).toFixed(1)} cm/px at row ${row}`).join(", ");
  const from = scale.source === "prior"
    ? "no pedestrian seen yet, so a typical camera (6 m high) is assumed"
    : `fitted from ${scale.sightings} pedestrian sightings (${scale.walkers} walking), `
      + `camera about ${scale.camera_height_m} m up, horizon at row ${scale.horizon_row}`;
  return `Scale: approximate, ${from}: ${across}. Every measure of this camera is marked approximate; `
    + "calibrate it for exact ones.";
}

function gridStep(scale) {
  return scale.grid_step_m ?? 2;
}

function invert([[a, b, c], [d, e, f], [g, h, i]]) {
  const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
  return [[(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det]];
}

function apply(m, [x, y]) {
  const w = m[2][0] * x + m[2][1] * y + m[2][2];
  return [(m[0][0] * x + m[0][1] * y + m[0][2]) / w, (m[1][0] * x + m[1][1] * y + m[1][2]) / w, w];
}

// Lines every few metres on the ground, over the part of the ground the frame shows.
function drawGroundGrid(ctx, scaleInfo, width, height, scale) {
  const toGround = scaleInfo?.matrix;
  if (!toGround) return;
  const toImage = invert(toGround);
  const seen = [];
  for (let v = height; v > 0; v -= height / 12) {
    for (let u = 0; u <= width; u += width / 8) {
      const [x, y, w] = apply(toGround, [u, v]);
      if (w * (scaleInfo.side ?? 1) > 0 && Number.isFinite(x) && Number.isFinite(y)) seen.push([x, y]);
    }
  }
  if (seen.length < 2) return;
  const step = gridStep(scaleInfo);
  const span = (axis) => [Math.floor(Math.min(...seen.map((p) => p[axis])) / step) * step,
    Math.ceil(Math.max(...seen.map((p) => p[axis])) / step) * step];
  const [[x0, x1], [y0, y1]] = [span(0), span(1)];
  ctx.save();
  ctx.strokeStyle = GRID_COLOUR;
  ctx.lineWidth = 1;
  const line = (from, to) => {
    const points = [];
    for (let k = 0; k <= 40; k++) {
      const [u, v] = apply(toImage, [from[0] + ((to[0] - from[0]) * k) / 40, from[1] + ((to[1] - from[1]) * k) / 40]);
      if (u > -width && u < 2 * width && v >= 0 && v <= 2 * height) points.push([u * scale.x, v * scale.y]);
    }
    if (points.length > 1) { tracePath(ctx, points, false); ctx.stroke(); }
  };
  for (let x = x0; x <= x1 && (x1 - x0) / step < 200; x += step) line([x, y0], [x, y1]);
  for (let y = y0; y <= y1 && (y1 - y0) / step < 200; y += step) line([x0, y], [x1, y]);
  ctx.restore();
}

function redraw() {
  const img = frame();
  if (!img.naturalWidth || !dialog().open) return;
  const { ctx, scale } = canvasOver(img, canvas(), img.naturalWidth, img.naturalHeight, "12px sans-serif");
  drawGroundGrid(ctx, draft.scale, img.naturalWidth, img.naturalHeight, scale);
  drawZones(ctx, draft.zones, scale);
  drawPoints(ctx, draft.points, scale, DRAFT_COLOUR, mode() === "polygon");
  drawPoints(ctx, draft.image, scale, CALIBRATION_COLOUR, false, true);
}

function drawPoints(ctx, points, scale, colour, closed, numbered = false) {
  if (!points.length) return;
  const scaled = points.map(([x, y]) => [x * scale.x, y * scale.y]);
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = 2;
  if (!numbered) {
    tracePath(ctx, scaled, closed && scaled.length > 2);
    ctx.stroke();
  }
  scaled.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(x, y, 4, 0, 2 * Math.PI);
    ctx.fillStyle = colour;
    ctx.fill();
    if (numbered) canvasLabel(ctx, String(i + 1), x + 6, y - 4, colour);
  });
}

// The operators' dashboard: loads cameras, results, alerts and counts from the REST
// API, then follows the Socket.IO events. Everything from the server is inserted as
// text (textContent), never as HTML: reasons are model output, names are user input.

import { getJson, cameraPath } from "./api.js";
import { loadAlerts, offerCameras, onAlert, setUpFilters } from "./alerts.js";
import { openCameraForm, setUpCameraForm } from "./cameras.js";
import { loadConflicts, onConflict } from "./conflicts.js";
import { attachChart, detachChart, loadStats, onStats, redrawCharts } from "./charts.js";
import { openGeometryEditor, setUpGeometryEditor } from "./geometry.js";
import {
  cameraIds, cameraOf, redrawAll, removeCamera, setTileActions, showResult, showStatus, tileOf, upsertCamera,
} from "./grid.js";
import { startSystemPanel } from "./system.js";

// Cameras added or removed elsewhere (another operator, the YAML file) show up this soon.
const CAMERA_SYNC_MS = 10000;
const CHART_REDRAW_MS = 30000;

function addCamera(camera) {
  const known = cameraOf(camera.id) !== undefined;
  const tile = upsertCamera(camera);
  if (!known) {
    attachChart(camera.id, tile.node.querySelector(".chart"));
    loadStats(camera.id);
    loadLatest(camera.id);
  }
  offerCameras(cameraIds());
}

async function loadLatest(cameraId) {
  try {
    showResult(await getJson(`${cameraPath(cameraId)}/latest`));
  } catch {
    // no result yet: the first frame_result will bring one
  }
}

function dropCamera(cameraId) {
  removeCamera(cameraId);
  detachChart(cameraId);
  offerCameras(cameraIds());
  if (!cameraIds().length) {
    const note = document.createElement("p");
    note.className = "empty";
    note.textContent = "No cameras yet.";
    document.getElementById("grid").append(note);
  }
}

async function syncCameras() {
  const cameras = await getJson("/api/cameras");
  const listed = new Set(cameras.map((camera) => camera.id));
  for (const id of cameraIds()) if (!listed.has(id)) dropCamera(id);
  for (const camera of cameras) addCamera(camera);
}

function setUpCameraManagement() {
  setUpCameraForm({ saved: addCamera, deleted: dropCamera });
  setUpGeometryEditor(addCamera);
  setTileActions({
    edit: (id) => openCameraForm(cameraOf(id)),
    geometry: (id) => openGeometryEditor(cameraOf(id)),
  });
  document.getElementById("add-camera").addEventListener("click", () => openCameraForm());
}

function connectSocket() {
  const socket = io({ transports: ["websocket", "polling"] });
  const connection = document.getElementById("connection");
  let wasConnected = false;
  socket.on("connect", () => {
    connection.textContent = "live";
    connection.className = "badge live";
    // Back after a break: catch up on what the events of the break said.
    if (wasConnected) syncCameras().then(loadAlerts).then(loadConflicts).catch(() => {});
    wasConnected = true;
  });
  socket.on("disconnect", () => { connection.textContent = "reconnecting…"; connection.className = "badge"; });
  socket.on("connect_error", (error) => { connection.textContent = `not connected: ${error.message}`; });
  socket.on("frame_result", showResult);
  socket.on("alert", onAlert);
  socket.on("conflict", onConflict);
  socket.on("stats", onStats);
  socket.on("camera_status", async (status) => {
    if (!tileOf(status.camera_id)) await syncCameras();
    showStatus(status);
  });
}

async function start() {
  setUpCameraManagement();
  setUpFilters(document.getElementById("alert-filters"));
  await syncCameras();
  await loadAlerts().catch((error) => console.warn("alerts:", error.message));
  await loadConflicts().catch((error) => console.warn("conflicts:", error.message));
  connectSocket();
  startSystemPanel();
  setInterval(() => syncCameras().catch(() => {}), CAMERA_SYNC_MS);
  setInterval(redrawCharts, CHART_REDRAW_MS);
  window.addEventListener("resize", () => { redrawAll(); redrawCharts(); });
  document.body.dataset.ready = "true";
}

start();

// Adding, editing and deleting cameras through the REST API. The API validates: its
// message (say, on a 400 or a 409) is shown in the form as it is.

import { cameraPath, request } from "./api.js";

const FIELDS = ["id", "url", "name", "sample_fps"];
let editing = null;  // the camera being edited, null when adding
let callbacks = {};

// on: { saved(camera), deleted(cameraId) }
export function setUpCameraForm(on) {
  callbacks = on;
  const form = document.getElementById("camera-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save(form);
  });
  form.querySelector(".cancel").addEventListener("click", () => dialog().close());
  form.querySelector(".delete").addEventListener("click", () => askToDelete(form, true));
  form.querySelector(".keep").addEventListener("click", () => askToDelete(form, false));
  form.querySelector(".confirm-delete").addEventListener("click", () => remove(form));
}

const dialog = () => document.getElementById("camera-dialog");

export function openCameraForm(camera = null) {
  editing = camera;
  const form = document.getElementById("camera-form");
  form.reset();
  for (const name of FIELDS) form.elements[name].value = camera?.[name] ?? (name === "sample_fps" ? "1" : "");
  form.elements.enabled.checked = camera?.enabled ?? true;
  form.elements.id.readOnly = camera !== null;
  form.querySelector(".form-title").textContent = camera ? `Edit camera ${camera.id}` : "Add a camera";
  form.querySelector(".delete").hidden = camera === null;
  askToDelete(form, false);
  showError(form, "");
  dialog().showModal();
}

// The camera as the API wants it: what the form edits over what the camera had (zones,
// calibration and the rest stay), without the status the API adds when it answers.
function cameraFromForm(form) {
  const { status, ...kept } = editing ?? {};
  const body = { ...kept, id: form.elements.id.value.trim(), url: form.elements.url.value.trim(),
    name: form.elements.name.value.trim(), enabled: form.elements.enabled.checked };
  const fps = form.elements.sample_fps.value.trim();
  if (fps !== "") body.sample_fps = Number.isNaN(Number(fps)) ? fps : Number(fps);
  else delete body.sample_fps;
  return body;
}

async function save(form) {
  const body = cameraFromForm(form);
  const busy = form.querySelector(".save");
  busy.disabled = true;
  try {
    const camera = editing
      ? await request("PUT", cameraPath(editing.id), body)
      : await request("POST", "/api/cameras", body);
    dialog().close();
    callbacks.saved?.(camera);
  } catch (error) {
    showError(form, error.message);
  } finally {
    busy.disabled = false;
  }
}

// Deleting takes a second click, on a button that only shows after the first.
function askToDelete(form, asking) {
  form.querySelector(".delete-confirmation").hidden = !asking;
  form.querySelector(".delete").hidden = asking || editing === null;
}

async function remove(form) {
  try {
    await request("DELETE", cameraPath(editing.id));
    dialog().close();
    callbacks.deleted?.(editing.id);
  } catch (error) {
    showError(form, error.message);
  }
}

function showError(form, message) {
  form.querySelector(".form-error").textContent = message;
}

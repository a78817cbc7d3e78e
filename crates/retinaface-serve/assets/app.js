// The page's script: send the photo to /v1/detect, draw what comes back, and ask
// /v1/anonymize for the anonymised copy on demand. No library, nothing fetched elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let photo = null; // { file, bitmap }
let anonymizedUrl = null;

function headers(type) {
  const h = { "Content-Type": type || "application/octet-stream" };
  const key = $("key").value.trim();
  if (key) h["x-api-key"] = key;
  return h;
}

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function post(path, file) {
  const query = "?threshold=" + encodeURIComponent($("threshold").value || "0.5");
  const response = await fetch(path + query, { method: "POST", headers: headers(file.type), body: file });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message += ": " + (await response.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function draw(bitmap, faces) {
  const canvas = $("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const g = canvas.getContext("2d");
  g.drawImage(bitmap, 0, 0);
  const line = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 400));
  g.lineWidth = line;
  g.font = (6 * line + 6) + "px sans-serif";
  const colours = ["#f00", "#0ff", "#f0f", "#0f0", "#f80"];
  for (const f of faces) {
    const [x1, y1, x2, y2] = f.box;
    g.strokeStyle = "#0f0";
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    g.fillStyle = "#0f0";
    g.fillText(f.score.toFixed(2), x1, Math.max(10, y1 - 2 * line));
    (f.landmarks || []).forEach(([x, y], k) => {
      g.fillStyle = colours[k];
      g.beginPath();
      g.arc(x, y, 1.5 * line, 0, 2 * Math.PI);
      g.fill();
    });
  }
  canvas.hidden = false;
}

function list(faces) {
  const ol = $("faces");
  ol.replaceChildren(...faces.map((f) => {
    const li = document.createElement("li");
    const [x1, y1, x2, y2] = f.box.map(Math.round);
    li.textContent = `score ${f.score.toFixed(3)}  box (${x1}, ${y1})–(${x2}, ${y2})`;
    return li;
  }));
}

async function detect() {
  if (!photo) return;
  status("Detecting…");
  $("show-anonymized").checked = false;
  showAnonymized(false);
  try {
    const answer = await (await post("/v1/detect", photo.file)).json();
    // The bitmap is oriented by the browser as the server orients the photo (EXIF).
    if (photo.bitmap) draw(photo.bitmap, answer.faces);
    list(answer.faces);
    status(`${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"} in ${answer.took_ms.toFixed(0)} ms`);
    $("show-anonymized").disabled = false;
  } catch (e) {
    status(e.message, true);
  }
}

function showAnonymized(on) {
  $("anonymized").hidden = !on;
  $("canvas").hidden = on || !photo || !photo.bitmap;
  $("download").hidden = !on;
}

async function anonymize() {
  status("Anonymising…");
  try {
    const path = "/v1/anonymize?mode=" + encodeURIComponent($("mode").value);
    const response = await fetch(
      path + "&threshold=" + encodeURIComponent($("threshold").value || "0.5"),
      { method: "POST", headers: headers(photo.file.type), body: photo.file },
    );
    if (!response.ok) throw new Error(response.status + ": " + (await response.json()).error);
    const blob = await response.blob();
    if (anonymizedUrl) URL.revokeObjectURL(anonymizedUrl);
    anonymizedUrl = URL.createObjectURL(blob);
    $("anonymized").src = anonymizedUrl;
    $("download").href = anonymizedUrl;
    $("download").download = "anonymized-" + (photo.file.name || "photo");
    showAnonymized(true);
    status(`${response.headers.get("x-faces")} face(s) hidden`);
  } catch (e) {
    status(e.message, true);
  }
}

async function choose(file) {
  if (!file) return;
  try {
    photo = { file, bitmap: await createImageBitmap(file) };
  } catch (_) {
    // This browser cannot show the file; the server may still read it.
    photo = { file, bitmap: null };
    $("canvas").hidden = true;
  }
  await detect();
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("threshold").addEventListener("change", detect);
$("mode").addEventListener("change", () => { if ($("show-anonymized").checked) anonymize(); });
$("show-anonymized").addEventListener("change", (e) => (e.target.checked ? anonymize() : showAnonymized(false)));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});

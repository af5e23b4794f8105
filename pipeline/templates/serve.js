// The page of `pamtri serve`: upload a crop, show the nearest indexed images, search again from any result.
// Plain DOM; every text from the server goes in through textContent, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
let queryUrl = null;
let last = null;  // the query shown: [blob, name, camera], searched again when a filter changes

function setStatus(text, error) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", Boolean(error));
}

function formatTime(t) {
  if (t === null || t === undefined) return "no time";
  if (t > 1e9) return new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  return `t = ${t}`;
}

function timeValue(input) {
  // a time input's value in the index's units: Unix seconds from a UTC date and time, or the number typed
  if (!input || input.value === "") return null;
  if (input.dataset.kind === "epoch") return Date.parse(`${input.value}Z`) / 1000;
  return Number(input.value);
}

function searchParams(queryCamera) {
  const p = new URLSearchParams();
  p.set("top", $("top").value || "20");
  const boxes = [...document.querySelectorAll("input.camera")];
  const picked = boxes.filter((b) => b.checked);
  if (boxes.length && picked.length < boxes.length) {
    if (!picked.length) return null;
    picked.forEach((b) => p.append("cameras", b.value));
  }
  for (const [id, key] of [["time-from", "time_from"], ["time-to", "time_to"]]) {
    const t = timeValue($(id));
    if (t !== null) p.set(key, String(t));
  }
  if ($("rerank").checked) p.set("rerank", "true");
  if (queryCamera !== null && queryCamera !== undefined) {
    p.set("query_camera", String(queryCamera));
    if ($("exclude-same").checked) p.set("exclude_same_camera", "true");
  }
  return p;
}

function drawKeypoints(query) {
  const img = $("query-img");
  const canvas = $("query-kps");
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const sx = img.clientWidth / query.width;
  const sy = img.clientHeight / query.height;
  ctx.strokeStyle = "#000";
  for (const [x, y, c] of query.keypoints) {  // green: confident (>= 0.5), yellow: less so
    ctx.globalAlpha = Math.max(0.6, Math.min(1, c));
    ctx.fillStyle = c >= 0.5 ? "#2ecc40" : "#ffdc00";
    ctx.beginPath();
    ctx.arc(x * sx, y * sy, 4, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  }
  canvas.dataset.drawn = String(query.keypoints.length);
}

function showQuery(blob, query, queryCamera) {
  if (queryUrl) URL.revokeObjectURL(queryUrl);
  queryUrl = URL.createObjectURL(blob);
  const img = $("query-img");
  img.onload = () => drawKeypoints(query);
  img.src = queryUrl;
  const where = queryCamera === null || queryCamera === undefined ? "" : `, camera ${queryCamera}`;
  $("query-info").textContent = `${query.name}${where}: ${query.keypoints.length} keypoints drawn`;
  $("query").hidden = false;
}

function tile(hit) {
  const fig = document.createElement("figure");
  fig.className = "tile";
  fig.dataset.imageId = String(hit.image_id);
  const img = document.createElement("img");
  img.alt = hit.image;
  img.loading = "eager";
  img.src = `/v1/images/${encodeURIComponent(hit.image_id)}?size=256`;
  const cap = document.createElement("figcaption");
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `#${hit.rank} `;
  cap.append(rank, document.createTextNode(hit.image), document.createElement("br"),
    document.createTextNode(`camera ${hit.camera ?? "?"} · ${formatTime(hit.time)}`), document.createElement("br"),
    document.createTextNode(`distance ${hit.distance.toFixed(4)}`));
  const again = document.createElement("button");
  again.type = "button";
  again.className = "again";
  again.textContent = "search from this";
  again.addEventListener("click", async () => {
    setStatus(`fetching ${hit.image} ...`);
    const r = await fetch(`/v1/images/${encodeURIComponent(hit.image_id)}`);
    if (!r.ok) return setStatus(`cannot fetch ${hit.image} (${r.status})`, true);
    search(await r.blob(), hit.image, hit.camera);
  });
  fig.append(img, cap, again);
  return fig;
}

async function search(blob, name, queryCamera) {
  const params = searchParams(queryCamera);
  last = [blob, name, queryCamera];
  if (params === null) return setStatus("pick at least one camera", true);
  document.body.dataset.state = "searching";
  setStatus(`searching for ${name} ...`);
  const form = new FormData();
  form.append("files", blob, name);
  let body;
  try {
    const r = await fetch(`/v1/search?${params}`, { method: "POST", body: form });
    body = await r.json();
    if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
  } catch (err) {
    document.body.dataset.state = "error";
    return setStatus(`search failed: ${err.message}`, true);
  }
  const query = body.queries[0];
  showQuery(blob, query, queryCamera);
  const grid = $("results");
  grid.replaceChildren(...query.results.map(tile));
  $("index-size").textContent = String(body.index_size);
  setStatus(`${query.results.length} results for ${name} (index of ${body.index_size} images)`);
  document.body.dataset.state = "done";
}

function pick(files) {
  if (!files || !files.length) return;
  const f = files[0];
  search(f, f.name, null);
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => pick(e.target.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); pick(e.dataTransfer.files); });
  for (const input of document.querySelectorAll("fieldset input")) {
    input.addEventListener("change", () => { if (last) search(...last); });
  }
});

// FaceGraph demo page: one form, every pipeline, results drawn on canvases.
// Plain browser JavaScript, no build step. Every request goes to this page's own origin.
// <body data-state="idle|busy|done|error" data-run="N"> tells a test (or a curious
// reader) where the Nth run is.
"use strict";

// Box colours that stand out on photos and on the green mask tint; every box has a dark
// outline under it, so it shows on light and dark images alike.
const BOX = "#ffea00"; // a detected face / a kept face
const DUP = "#ff3d00"; // a face merged into an earlier one (face extraction)
const OUTLINE = "rgba(0, 0, 0, 0.75)";

// The pipelines: where each is served (`prefix`: its application's route prefix; `path`:
// its POST route there), the options the page offers and how the answer is drawn. An
// option is only a name here: its title, default, limits and choices come from the
// application's own OpenAPI schema (the pipeline's parameters model,
// serve_app/pipelines/*.py), so the page never restates them.
const PIPELINES = {
  "face-mask": {
    label: "Cartoon face mask",
    prefix: "/v1/face-mask", path: "/", outputs: "mask,overlay", render: renderMask,
    about: "Anime / cartoon faces: LBP face detector, then the face parser on each face; the mask is tinted over the image.",
    options: ["include_hair", "threshold", "expand", "use_crf"],
  },
  "face-mask-sam2": {
    label: "Face mask with SAM2",
    prefix: "/v1/face-mask-sam2", path: "/", outputs: "mask,overlay", render: renderMask,
    about: "Real and western-cartoon faces: RetinaFace and FaceMesh place each face, SAM2 segments it; " +
      "without a SAM2 service each face gets its filled FaceMesh oval.",
    options: ["max_num_faces", "expand", "pos_points", "multimask"],
  },
  "extract-faces": {
    label: "Face extraction",
    prefix: "", path: "/extract-faces", json: true, render: renderExtraction,
    about: "RetinaFace, 5-point alignment and ArcFace embeddings; faces of the same person (across all chosen " +
      "images) are grouped, the first one kept.",
    options: ["similarity_threshold", "min_face_size"],
  },
  "mask-augment": {
    label: "Mask augmentation",
    prefix: "/v1/mask-augment", path: "/", outputs: "masked,crops", render: renderAugmentation,
    about: "Paints a face mask (MaskTheFace templates) on every face on its FaceMesh, and cuts aligned crops.",
    options: ["mask_types", "n_augmentations", "seed", "crop_style", "no_mask"],
  },
  "anonymize": {
    label: "Anonymisation (3D)",
    prefix: "/v1/anonymize", path: "/", outputs: "anonymized,renders", render: renderAnonymization,
    about: "RetinaFace, then 3DDFA_V2 fits a 3D face; the face is morphed toward the mean face, its texture " +
      "blurred, the eyes (and mouth) removed, and it is re-rendered into the photo.",
    options: ["alpha", "keep_pose", "remove_mouth", "texture_blur", "max_num_faces"],
  },
  // The people gallery (/v1/people): every route needs the API key, typed into the page
  // (kept in this tab only, sent as Authorization: Bearer).
  "people-enrol": {
    label: "People: enrol a face",
    prefix: "/v1/people", path: "/", json: true, key: true, render: renderEnrolment,
    about: "Remembers a person in the people gallery: the largest face of each chosen image is enrolled " +
      "under the name given.",
    options: ["name"],
  },
  "people-search": {
    label: "People: who is this?",
    prefix: "/v1/people", path: "/search", json: true, key: true, render: renderPeopleSearch,
    about: "Searches every face of the chosen images in the people gallery and draws the names of the people " +
      "it knows on their faces.",
    options: ["top_k", "similarity_threshold"],
  },
};
for (const p of Object.values(PIPELINES)) {
  p.url = p.prefix + (p.path === "/" ? "" : p.path) || "/";
  p.health = p.prefix + "/health";
}

// What an error code means for the person at the page, before the server's own message.
const ERROR_HINTS = {
  unsupported_format: "This file is not an image the server reads.",
  empty_image: "The file is empty.",
  corrupt_image: "The image could not be read (truncated or corrupt).",
  bad_input: "The request was not valid.",
  too_large: "The image is too large.",
  invalid_parameter: "An option is out of range.",
  invalid_image_source: "The request was not valid.",
  no_images: "No image was sent.",
  not_ready: "The models are still starting, or busy: try again in a moment.",
  upstream_timeout: "The server took too long.",
  request_timeout: "The server took too long.",
  model_error: "A model failed on this image.",
  internal: "The server failed on this request.",
  not_found: "This pipeline is not deployed on this server.",
  unauthorized: "This pipeline needs the API key: FACEGRAPH_API_KEY, or the api_key file in the server's data directory.",
  no_usable_face: "No image gave a face to enrol.",
  person_not_found: "That person is not in the gallery.",
  weights_mismatch: "The gallery was enrolled with another recogniser.",
  store_unavailable: "The gallery's store is down: try again in a moment.",
};

// The people gallery's API key, as typed into the page; never stored.
let apiKey = "";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// ---------------------------------------------------------------- the form

function currentPipeline() {
  return PIPELINES[$("pipeline").value];
}

function buildPipelineChoice() {
  const select = $("pipeline");
  for (const [key, p] of Object.entries(PIPELINES)) select.append(el("option", { value: key, text: p.label }));
  select.addEventListener("change", showPipeline);
  showPipeline();
  checkDeployed();
}

function showPipeline() {
  const p = currentPipeline();
  $("pipeline-about").textContent = p.about;
  $("pipeline-endpoint").textContent = "POST " + p.url;
  $("pipeline-health").textContent = p.deployed === undefined ? "checking…" : p.deployed;
  const box = $("options");
  box.replaceChildren();
  if (p.key) {
    const input = el("input", { id: "api-key", type: "password", autocomplete: "off" });
    input.value = apiKey;
    input.addEventListener("input", () => { apiKey = input.value; });
    box.append(el("label", { for: "api-key", title: "sent as Authorization: Bearer <key>" }, "API key", input));
  }
  for (const o of p.fields || []) box.append(optionField(o));
}

// The pipeline's options as form fields, from its application's OpenAPI schema: the
// POST route's request body (a form or JSON model; `allOf` and `$ref` followed).
async function loadOptions(p) {
  const api = await (await fetch(p.prefix + "/openapi.json", { headers: { Accept: "application/json" } })).json();
  const resolve = (schema) => (schema.$ref ? api.components.schemas[schema.$ref.split("/").pop()] : schema);
  const properties = {};
  const collect = (schema) => {
    schema = resolve(schema);
    for (const part of schema.allOf || []) collect(part);
    Object.assign(properties, schema.properties || {});
  };
  const content = api.paths[p.path].post.requestBody.content;
  collect(Object.values(content)[0].schema);
  p.fields = p.options.filter((name) => properties[name]).map((name) => fieldOf(name, properties[name]));
}

// One schema property -> {name, label, help, type, value, min, max, step, choices}.
function fieldOf(name, prop) {
  const kind = (prop.anyOf || [prop]).find((s) => s.type !== "null") || prop; // Optional[X] -> X
  const help = prop.description || name;
  const field = { name, label: labelOf(help), help, value: prop.default ?? "" };
  if (kind.type === "boolean") return { ...field, type: "checkbox", value: Boolean(prop.default) };
  const choices = kind.enum || prop.examples;
  if (choices) return { ...field, type: "select", choices };
  if (kind.type !== "integer" && kind.type !== "number") return { ...field, type: "text" };
  const min = kind.minimum ?? kind.exclusiveMinimum, max = kind.maximum ?? kind.exclusiveMaximum;
  // Integers step by 1; numbers by a round twentieth or so of their range.
  const step = kind.type === "integer" ? 1 : max === undefined ? "any" : 10 ** Math.floor(Math.log10((max - min) / 20));
  return { ...field, type: "number", min, max, step };
}

// A field's label: its description's first clause, without asides in parentheses (the
// whole description is the label's tooltip).
function labelOf(description) {
  const clause = description.replace(/\s*\([^)]*\)/g, "").split(/[;:]/)[0].trim();
  return clause.charAt(0).toUpperCase() + clause.slice(1);
}

function optionField(o) {
  const id = "opt-" + o.name;
  let input;
  if (o.type === "select") {
    input = el("select", { id, name: o.name });
    for (const c of o.choices) input.append(el("option", { value: c, text: c }));
    input.value = o.value;
  } else if (o.type === "checkbox") {
    input = el("input", { id, name: o.name, type: "checkbox" });
    input.checked = o.value;
  } else {
    input = el("input", { id, name: o.name, type: o.type, min: o.min, max: o.max, step: o.step });
    input.value = o.value;
  }
  const label = el("label", { for: id, class: o.type === "checkbox" ? "check" : "", title: o.help });
  if (o.type === "checkbox") label.append(input, " " + o.label);
  else label.append(o.label, input);
  return label;
}

class OptionError extends Error {}

// The options as the endpoint wants them: form strings, or JSON numbers and booleans.
function optionValues(p) {
  const values = {};
  for (const o of p.fields || []) {
    const input = $("opt-" + o.name);
    if (o.type === "checkbox") values[o.name] = input.checked;
    else if (o.type === "number") {
      // The server checks the limits (one place for them); the page only refuses non-numbers.
      if (input.validity.badInput) throw new OptionError(`${o.label}: enter a number.`);
      if (input.value.trim() === "") continue; // unset: the server's default
      values[o.name] = Number(input.value);
    } else if (input.value.trim() !== "") values[o.name] = input.value; // empty: the server's default
  }
  return values;
}

// Which pipelines this server has: each app's liveness route, once, on load.
async function checkDeployed() {
  await Promise.all(Object.values(PIPELINES).map(async (p) => {
    try {
      const resp = await fetch(p.health, { headers: { Accept: "application/json" } });
      if (resp.ok) await loadOptions(p);
      p.deployed = resp.ok ? "deployed" : resp.status === 404 ? "not deployed" : `health: HTTP ${resp.status}`;
    } catch (err) {
      p.deployed = "server unreachable";
    }
  }));
  for (const option of $("pipeline").options) {
    const p = PIPELINES[option.value];
    option.textContent = p.label + (p.deployed === "deployed" ? "" : " (" + p.deployed + ")");
  }
  showPipeline(); // the options, now that the schemas are in
}

function showPreview() {
  const box = $("preview");
  box.replaceChildren();
  for (const file of $("image").files) {
    // Not every file is a picture; the server says what it makes of it.
    const thumb = file.type.startsWith("image/") ? el("img", { src: URL.createObjectURL(file), alt: file.name })
      : el("div", { class: "not-image", text: file.type || "unknown type" });
    box.append(el("figure", {}, thumb,
      el("figcaption", { text: `${file.name} · ${Math.max(1, Math.round(file.size / 1024))} KiB` })));
  }
}

// ---------------------------------------------------------------- running

let runs = 0;

async function run(event) {
  event.preventDefault();
  const p = currentPipeline();
  const files = Array.from($("image").files);
  runs += 1;
  const thisRun = runs;
  document.body.dataset.run = String(thisRun);
  setState("busy", `running ${p.label}…`);
  $("request-id").textContent = "–";
  $("elapsed").textContent = "–";
  $("result").replaceChildren();
  showNotes([]);
  if (!files.length) {
    fail({ title: "Choose an image first." });
    return;
  }
  $("run").disabled = true;
  const started = performance.now();
  let resp;
  try {
    resp = await send(p, files);
  } catch (err) {
    $("run").disabled = false;
    if (err instanceof OptionError) {
      fail({ title: "An option is not valid.", detail: err.message });
      return;
    }
    $("elapsed").textContent = `${Math.round(performance.now() - started)} ms`;
    fail({ title: "Could not reach the server.", detail: err.message });
    return;
  }
  const text = await resp.text();
  const elapsed = performance.now() - started;
  $("run").disabled = false;
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (err) {
    body = null; // a proxy's plain-text answer: shown as it is below
  }
  const rid = (body && body.request_id) || resp.headers.get("X-Request-ID") || "";
  $("request-id").textContent = rid || "(none)";
  const server = body && typeof body.processing_time_ms === "number" ? ` (server: ${Math.round(body.processing_time_ms)} ms)` : "";
  $("elapsed").textContent = `${Math.round(elapsed)} ms${server}`;
  if (!resp.ok || !body) {
    fail(errorParts(p, resp, body, text));
    return;
  }
  try {
    const outcome = await p.render(body, files);
    if (thisRun !== runs) return;
    if (outcome && outcome.error) fail(outcome.error);
    else setState("done", `HTTP ${resp.status} · ${outcome ? outcome.summary : "done"}`);
  } catch (err) {
    fail({ title: "The answer could not be drawn.", detail: err.message, code: "page_error" });
  }
}

async function send(p, files) {
  const values = optionValues(p);
  if (p.json) {
    const images = await Promise.all(files.map(readDataUri));
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (p.key && apiKey.trim()) headers.Authorization = `Bearer ${apiKey.trim()}`;
    return fetch(p.url, {
      method: "POST",
      headers,
      body: JSON.stringify({ images: images.map((uri) => ({ image_base64: uri })), ...values }),
    });
  }
  const form = new FormData();
  form.append("image", files[0], files[0].name);
  for (const [key, value] of Object.entries(values)) form.append(key, String(value));
  if (p.outputs) form.append("outputs", p.outputs);
  return fetch(p.url, { method: "POST", body: form, headers: { Accept: "application/json" } });
}

function readDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// A failed answer as what it means, the server's own message and the code: from the
// shared error shape {error, message, request_id} when it is one, else from the status.
function errorParts(p, resp, body, text) {
  const status = resp.status;
  if (body && body.error && body.message) {
    return { title: ERROR_HINTS[body.error] || "The request failed.", detail: body.message, code: body.error, status };
  }
  if (status === 404) return { title: ERROR_HINTS.not_found, detail: `Nothing answers POST ${p.url} here.`, status };
  return { title: "The request failed.", detail: text.trim().slice(0, 300) || resp.statusText, status };
}

function setState(state, status) {
  document.body.dataset.state = state;
  $("status").textContent = status;
  $("status").className = state;
  if (state !== "error") {
    $("error").hidden = true;
    $("error").textContent = "";
  }
}

function fail({ title, detail = "", code = "", status = null }) {
  setState("error", status ? `failed · HTTP ${status}` : "failed");
  const box = $("error");
  box.hidden = false;
  box.dataset.code = code;
  box.replaceChildren(el("strong", { text: title }));
  if (detail) box.append(el("p", { text: detail }));
  if (code && status) box.append(el("p", { class: "code", text: `error code: ${code}, HTTP ${status}` }));
}

function showNotes(lines) {
  const box = $("notes");
  box.replaceChildren(...lines.map((line) => el("p", { text: line })));
  box.hidden = !lines.length;
}

// ---------------------------------------------------------------- drawing

const asDataUri = (b64, mime = "image/png") => (b64.startsWith("data:") ? b64 : `data:${mime};base64,${b64}`);

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("an image in the answer could not be decoded"));
    img.src = src;
  });
}

// An image on a canvas at its own resolution, with labelled boxes [x1, y1, x2, y2] in
// its pixels (the CSS scales the canvas down, so lines scale with the image).
function boxedCanvas(img, boxes, title) {
  const canvas = el("canvas", { class: "drawn", "data-boxes": String(boxes.length), title: title || "" });
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 250));
  const font = Math.max(12, line * 6);
  ctx.font = `bold ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const { box, label, color } of boxes) {
    const [x1, y1, x2, y2] = box.map(Math.round);
    ctx.lineWidth = line * 2;
    ctx.strokeStyle = OUTLINE;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.lineWidth = line;
    ctx.strokeStyle = color || BOX;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (label) {
      const width = ctx.measureText(label).width + line * 2;
      const top = y1 - font - line * 2 >= 0 ? y1 - font - line * 2 : y2;
      ctx.fillStyle = color || BOX;
      ctx.fillRect(x1 - line / 2, top, width, font + line * 2);
      ctx.fillStyle = "#111";
      ctx.fillText(label, x1 + line / 2, top + line);
    }
  }
  return canvas;
}

function figure(caption, ...content) {
  return el("figure", {}, ...content, el("figcaption", { text: caption }));
}

function panel(title, ...content) {
  return el("section", { class: "panel" }, el("h2", { text: title }), ...content);
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const people = (n) => `${n} ${n === 1 ? "person" : "people"}`;

// POST /v1/face-mask and /v1/face-mask-sam2: the tinted overlay with the boxes, and the mask.
async function renderMask(body) {
  const [overlay, mask] = await Promise.all([loadImage(asDataUri(body.overlay_png_base64)),
    loadImage(asDataUri(body.mask_png_base64))]);
  const faces = body.faces || body.boxes.map((box) => ({ box }));
  const boxes = faces.map((f, i) => ({ box: f.box, label: f.mask_source ? `${i + 1} · ${f.mask_source}` : `${i + 1}` }));
  const result = $("result");
  result.append(panel(`Mask overlay · ${plural(faces.length, "face")}`,
    el("div", { class: "row" },
      figure(`${body.width}×${body.height}, face mask tinted, detected faces boxed`, boxedCanvas(overlay, boxes, "overlay")),
      figure("binary mask (white = face)", el("img", { class: "mask", src: mask.src, alt: "mask" })))));
  if (body.faces) {
    const rows = body.faces.map((f, i) => el("tr", {},
      el("td", { text: String(i + 1) }), el("td", { text: f.mask_source }),
      el("td", { text: f.fallback_reason ? f.fallback_reason.replaceAll("_", " ") : "–" }),
      el("td", { text: f.meshed ? "yes" : "no (ellipse in the box)" })));
    if (rows.length) {
      result.append(panel("Where each mask came from", el("table", {},
        el("thead", {}, el("tr", {}, ...["face", "mask from", "why not SAM2", "meshed"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows))));
    }
  }
  if (!faces.length) showNotes(["No face was found in this image."]);
  return { summary: plural(faces.length, "face") };
}

// POST /extract-faces: each image with its faces boxed (kept and merged), and the
// headshots grouped by person with the faces merged into each.
async function renderExtraction(body, files) {
  const errors = body.image_errors.map((e) => `Image ${e.image_index + 1} (${files[e.image_index].name}): ` +
    `${e.message} [${e.error}]`);
  if (!body.images_processed) {
    const codes = new Set(body.image_errors.map((e) => e.error));
    const [code] = codes;
    const title = codes.size === 1 && ERROR_HINTS[code] ? ERROR_HINTS[code] : "No image could be used.";
    return { error: { title, detail: errors.join("\n"), code } };
  }
  const perImage = files.map(() => []);
  body.faces.forEach((f, k) => {
    perImage[f.image_index].push({ box: f.bbox, label: `#${k + 1}` });
    for (const d of f.duplicates) perImage[d.image_index].push({ box: d.bbox, label: `#${k + 1} again`, color: DUP });
  });
  const failed = new Set(body.image_errors.map((e) => e.image_index));
  const sources = await Promise.all(files.map((f, i) => (failed.has(i) ? null : loadImage(URL.createObjectURL(f)))));
  const row = el("div", { class: "row" });
  sources.forEach((img, i) => {
    if (img) row.append(figure(`image ${i + 1}: ${files[i].name} · ${plural(perImage[i].length, "face")}`,
      boxedCanvas(img, perImage[i], files[i].name)));
  });
  const result = $("result");
  result.append(panel(`Faces found · ${body.total_faces_detected} detected, ${people(body.unique_faces)}`, row,
    el("p", { class: "legend" }, el("span", { class: "swatch", style: `background:${BOX}` }), " first appearance (kept) ",
      el("span", { class: "swatch", style: `background:${DUP}` }), " the same person again (merged)")));
  const gallery = el("div", { class: "people" });
  body.faces.forEach((f, k) => {
    const card = el("div", { class: "person" },
      el("h3", { text: `#${k + 1}` }),
      figure(`image ${f.image_index + 1} · score ${f.confidence.toFixed(2)}`,
        el("img", { class: "headshot", src: f.headshot_base64, alt: `headshot ${k + 1}` })));
    for (const d of f.duplicates) {
      card.append(figure(`image ${d.image_index + 1} · similarity ${d.similarity.toFixed(2)}`,
        cropCanvas(sources[d.image_index], d.bbox)));
    }
    gallery.append(card);
  });
  result.append(panel("Headshots, one per person, with the faces merged into each", gallery));
  if (!body.faces.length) showNotes(["No face was found.", ...errors]);
  else showNotes(errors);
  return { summary: `${people(body.unique_faces)} in ${plural(body.images_processed, "image")}` };
}

// A merged face has no headshot of its own in the answer: cut its box from the image.
function cropCanvas(img, box, side = 160) {
  const canvas = el("canvas", { class: "duplicate" });
  canvas.width = side;
  canvas.height = side;
  const [x1, y1, x2, y2] = box;
  const size = Math.max(x2 - x1, y2 - y1) * 1.2;
  const cx = (x1 + x2) / 2;
  const cy = (y1 + y2) / 2;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, side, side);
  ctx.drawImage(img, cx - size / 2, cy - size / 2, size, size, 0, 0, side, side);
  ctx.lineWidth = 4;
  ctx.strokeStyle = DUP;
  ctx.strokeRect(2, 2, side - 4, side - 4);
  return canvas;
}

// POST /v1/mask-augment: each augmented copy with its faces boxed, then each face's crops.
async function renderAugmentation(body) {
  const result = $("result");
  const images = await Promise.all(body.augmentations.map((a) => (a.masked_png_base64
    ? loadImage(asDataUri(a.masked_png_base64)) : null)));
  const row = el("div", { class: "row" });
  body.augmentations.forEach((a, i) => {
    if (!images[i]) return;
    const boxes = body.faces.map((f) => {
      const aug = f.augmentations[i];
      return { box: f.box, label: aug.mask_type || aug.error || "no mask", color: aug.mask_type ? BOX : DUP };
    });
    row.append(figure(`augmentation ${i + 1}`, boxedCanvas(images[i], boxes, `augmentation ${i + 1}`)));
  });
  result.append(panel(`Masked · ${plural(body.faces.length, "face")} · seed ${body.seed} (set it to get the same result)`, row));
  const crops = el("div", { class: "crops" });
  body.faces.forEach((f, k) => {
    for (const aug of f.augmentations) {
      for (const [style, uri] of Object.entries(aug.crops)) {
        const what = aug.mask_type ? aug.mask_type + (aug.mask_color ? " " + aug.mask_color : "") +
          (aug.texture ? " " + aug.texture : "") : aug.error || "no mask";
        crops.append(figure(`face ${k + 1} · aug ${aug.augmentation + 1} · ${style} · ${what}`,
          el("img", { class: "crop", src: uri, alt: `face ${k + 1} ${style}` })));
      }
    }
  });
  if (crops.childElementCount) result.append(panel("Aligned crops", crops));
  if (!body.faces.length) showNotes(["No face was found in this image."]);
  return { summary: `${plural(body.faces.length, "face")} × ${plural(body.augmentations.length, "augmentation")}` };
}

// POST /v1/anonymize: the photo before and after, each face boxed with its pose, and
// the frontal render of each anonymised face.
async function renderAnonymization(body, files) {
  const [before, after] = await Promise.all([loadImage(URL.createObjectURL(files[0])),
    loadImage(asDataUri(body.anonymized_png_base64))]);
  const boxes = body.faces.map((f, i) => ({ box: f.box, label: `${i + 1} · yaw ${Math.round(f.pose.yaw)}°` }));
  const result = $("result");
  result.append(panel(`Anonymised · ${plural(body.faces.length, "face")}`,
    el("p", { class: "hint", text: `Morphable model: ${body.morphable_model}` }),
    el("div", { class: "row" },
      figure("original", boxedCanvas(before, [], "original")),
      figure("anonymised (faces boxed)", boxedCanvas(after, boxes, "anonymised")))));
  const renders = el("div", { class: "crops" });
  body.faces.forEach((f, i) => {
    if (f.render_png_base64) {
      renders.append(figure(`face ${i + 1} · yaw ${f.pose.yaw}° pitch ${f.pose.pitch}° roll ${f.pose.roll}°`,
        el("img", { class: "render", src: asDataUri(f.render_png_base64), alt: `render ${i + 1}` })));
    }
  });
  if (renders.childElementCount) result.append(panel("Frontal renders of the anonymised faces", renders));
  if (!body.faces.length) showNotes(["No face was found in this image: nothing was changed."]);
  return { summary: plural(body.faces.length, "face") + " anonymised" };
}

document.addEventListener("DOMContentLoaded", () => {
  buildPipelineChoice();
  $("image").addEventListener("change", showPreview);
  $("controls").addEventListener("submit", run);
});

// The image errors of a JSON answer, one line each, naming the file.
const imageErrors = (body, files) => body.image_errors.map((e) =>
  `Image ${e.image_index + 1} (${files[e.image_index].name}): ${e.message} [${e.error}]`);

// POST /v1/people: who was enrolled, and from which images.
async function renderEnrolment(body, files) {
  const failed = new Set(body.image_errors.map((e) => e.image_index));
  const row = el("div", { class: "row" });
  files.forEach((f, i) => {
    if (failed.has(i)) return;
    const img = el("img", { class: "enrolled", src: URL.createObjectURL(f), alt: f.name });
    row.append(figure(`image ${i + 1}: ${f.name}`, img));
  });
  const name = body.name || "(no name)";
  $("result").append(panel(`Enrolled · ${name} · ${plural(body.faces_enrolled, "face")} added`, row,
    el("p", { class: "person-id" }, "person id ", el("code", { text: body.person_id }),
      ` · ${plural(body.faces, "face")} in the gallery`)));
  showNotes(imageErrors(body, files));
  return { summary: `${name} enrolled` };
}

// POST /v1/people/search: each image with its faces boxed and the best match's name drawn on them.
async function renderPeopleSearch(body, files) {
  const errors = imageErrors(body, files);
  if (!body.images_processed) {
    const [code] = new Set(body.image_errors.map((e) => e.error));
    return { error: { title: ERROR_HINTS[code] || "No image could be used.", detail: errors.join("\n"), code } };
  }
  const nameOf = (f) => (f.matches.length ? f.matches[0].name || f.matches[0].person_id.slice(0, 8)
    : f.low_quality ? "too small to tell" : "unknown");
  const perImage = files.map(() => []);
  for (const f of body.faces) perImage[f.image_index].push({ box: f.box, label: nameOf(f) });
  const failed = new Set(body.image_errors.map((e) => e.image_index));
  const sources = await Promise.all(files.map((f, i) => (failed.has(i) ? null : loadImage(URL.createObjectURL(f)))));
  const row = el("div", { class: "row" });
  sources.forEach((img, i) => {
    if (img) row.append(figure(`image ${i + 1}: ${files[i].name} · ${plural(perImage[i].length, "face")}`,
      boxedCanvas(img, perImage[i], files[i].name)));
  });
  const known = body.faces.filter((f) => f.matches.length).length;
  const rows = body.faces.map((f) => el("tr", {},
    el("td", { text: String(f.image_index + 1) }), el("td", { text: nameOf(f) }),
    el("td", { text: f.matches.length ? f.matches.map((m) => m.similarity.toFixed(2)).join(", ") : "–" })));
  $("result").append(panel(`People found · ${known} of ${plural(body.faces.length, "face")} known ` +
    `(threshold ${body.similarity_threshold})`, row,
    el("table", {}, el("thead", {}, el("tr", {}, ...["image", "who", "similarity"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows))));
  if (!body.faces.length) showNotes(["No face was found.", ...errors]);
  else showNotes(errors);
  return { summary: `${known} of ${plural(body.faces.length, "face")} known` };
}

// vidsieve web page: upload a video (POST /v1/files), ask with a streamed chat completion, then draw the
// accounting and the kept-token overlay. The answer object arrives on the last content chunk (`vidsieve`).
"use strict";

const $ = (id) => document.getElementById(id);
const uploaded = new WeakMap(); // File -> file id, so asking again does not upload again

$("api-key").value = localStorage.getItem("vidsieve-api-key") || "";
$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  ask().catch((err) => setStatus(err.message, true));
});

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) $("ask").disabled = false;
}

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  localStorage.setItem("vidsieve-api-key", key);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error.message}`;
  } catch (_) {
    return `HTTP ${response.status}`;
  }
}

async function uploadVideo(file) {
  if (uploaded.has(file)) return uploaded.get(file);
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch("/v1/files", { method: "POST", body: form, headers: headers() });
  if (!response.ok) throw new Error(await errorMessage(response));
  const id = (await response.json()).id;
  uploaded.set(file, id);
  return id;
}

function options() {
  const out = { strategy: $("strategy").value.trim() || "none" };
  // Keep ratio left empty means "keep everything": that is strategy none whatever the field says.
  if ($("keep-ratio").value === "") out.strategy = "none";
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  if (number("keep-ratio") !== null) out.keep_ratio = number("keep-ratio");
  if (number("fps") !== null) out.fps = number("fps");
  return out;
}

async function ask() {
  const file = $("video-file").files[0];
  if (!file) throw new Error("choose a video file first");
  $("ask").disabled = true;
  $("answer").textContent = "";
  $("accounting").hidden = true;
  $("overlay-section").hidden = true;
  $("overlay").replaceChildren();
  $("overlay").removeAttribute("data-done");

  setStatus("uploading…");
  const fileId = await uploadVideo(file);
  setStatus("thinking…");
  const body = {
    stream: true,
    max_tokens: Number($("max-tokens").value) || 32,
    vidsieve: options(),
    messages: [{ role: "user", content: [
      { type: "video_url", video_url: { url: fileId } },
      { type: "text", text: $("question").value },
    ] }],
  };
  const response = await fetch("/v1/chat/completions", {
    method: "POST", body: JSON.stringify(body), headers: headers({ "Content-Type": "application/json" }),
  });
  if (!response.ok) throw new Error(await errorMessage(response));

  let result = null;
  for await (const event of serverSentEvents(response)) {
    if (event.error) throw new Error(`${event.error.code}: ${event.error.message}`);
    const choice = event.choices && event.choices[0];
    if (choice && choice.delta && choice.delta.content) $("answer").textContent += choice.delta.content;
    if (event.vidsieve) result = event.vidsieve;
  }
  if (!result) throw new Error("the stream ended without an answer");
  $("answer").textContent = result.answer;
  window.vidsieveResult = result; // for the browser test and for anyone poking at the page
  showAccounting(result.stats);
  setStatus("drawing frames…");
  await drawOverlay(file, result);
  setStatus(`done in ${(result.stats.timings_ms.total / 1000).toFixed(2)} s`);
  $("ask").disabled = false;
}

// Yields each `data:` JSON payload of an SSE response until [DONE].
async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function stat(label, value) {
  const div = document.createElement("div");
  div.className = "stat";
  div.innerHTML = `<div class="value"></div><div class="label"></div>`;
  div.querySelector(".value").textContent = value;
  div.querySelector(".label").textContent = label;
  return div;
}

function showAccounting(stats) {
  const pct = (100 * stats.tokens_after / Math.max(1, stats.tokens_before)).toFixed(1);
  $("stats").replaceChildren(
    stat("tokens kept / total", `${stats.tokens_after} / ${stats.tokens_before} (${pct}%)`),
    stat("frames sampled", `${stats.frames} @ ${stats.sampled_fps} fps`),
    stat("tokens per frame", stats.tokens_per_frame),
    stat("grid T×H×W", stats.grid.join("×")),
    stat("strategy / budget", `${stats.strategy} / ${stats.budget}`),
    stat("model", stats.model),
  );
  const timings = stats.timings_ms;
  const stages = Object.keys(timings).filter((k) => k !== "total" && timings[k] !== null);
  const longest = Math.max(1, ...stages.map((k) => timings[k]));
  $("timings").replaceChildren(...stages.map((k) => {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = `<span></span><div class="fill"></div><span class="ms"></span>`;
    row.children[0].textContent = k;
    row.children[1].style.width = `${(100 * timings[k] / longest).toFixed(1)}%`;
    row.children[2].textContent = `${timings[k].toFixed(1)} ms`;
    return row;
  }));
  $("accounting").hidden = false;
}

function seek(video, timeS) {
  return new Promise((resolve, reject) => {
    const done = () => { video.removeEventListener("seeked", done); resolve(); };
    video.addEventListener("seeked", done);
    video.addEventListener("error", () => reject(new Error("the browser cannot decode this video")), { once: true });
    video.currentTime = timeS;
  });
}

// One canvas per sampled frame: the frame, with the cells NOT sent to the LLM darkened and the kept ones outlined.
// kept [t, h, w] is on the LLM grid [T, H, W]: tubelet t covers sampled frames 2t and 2t+1.
async function drawOverlay(file, result) {
  const [T, H, W] = result.stats.grid;
  const keptByTubelet = new Map();
  for (const [t, h, w] of result.kept) {
    if (!keptByTubelet.has(t)) keptByTubelet.set(t, new Set());
    keptByTubelet.get(t).add(h * W + w);
  }
  const video = $("source-video");
  video.src = URL.createObjectURL(file);
  await new Promise((resolve, reject) => {
    video.onloadeddata = resolve;
    video.onerror = () => reject(new Error("the browser cannot decode this video for the overlay"));
  });
  // Thumbnails 160-260 px wide whatever the video's size.
  const width = Math.round(Math.min(260, Math.max(160, video.videoWidth)));
  const height = Math.round(width * video.videoHeight / video.videoWidth);
  $("overlay-section").hidden = false;
  const times = result.stats.frame_times_s;
  for (let i = 0; i < times.length; i++) {
    const t = Math.floor(i / 2);
    await seek(video, Math.min(times[i] + 0.001, Math.max(0, video.duration - 0.001)));
    const canvas = document.createElement("canvas");
    canvas.className = "frame";
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(video, 0, 0, width, height);
    const kept = keptByTubelet.get(t) || new Set();
    const cw = width / W, ch = height / H;
    for (let h = 0; h < H; h++) {
      for (let w = 0; w < W; w++) {
        const x = Math.round(w * cw), y = Math.round(h * ch);
        const cellW = Math.round((w + 1) * cw) - x, cellH = Math.round((h + 1) * ch) - y;
        if (kept.has(h * W + w)) {
          ctx.strokeStyle = "#2ee59d";
          ctx.lineWidth = 2;
          ctx.strokeRect(x + 1, y + 1, cellW - 2, cellH - 2);
        } else {
          ctx.fillStyle = "rgba(10, 14, 20, 0.72)";
          ctx.fillRect(x, y, cellW, cellH);
        }
      }
    }
    canvas.dataset.kept = String(kept.size);
    canvas.dataset.tubelet = String(t);
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = `${times[i].toFixed(2)} s · ${kept.size}/${H * W} kept`;
    figure.append(canvas, caption);
    $("overlay").append(figure);
  }
  URL.revokeObjectURL(video.src);
  $("overlay").dataset.done = "1";
}

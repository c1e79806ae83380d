// Section 2, "Draw or upload a digit": a Pointer Events canvas (mouse, pen, finger) or a file goes to
// /reconstruct (input seen, reconstruction, ELBO terms) and /encode (label probabilities, style mu).

import { ApiError, encode, generate, pngUrl, randomSeed, reconstruct } from "./api.js";
import { $, debounce, fmt, latestOnly, runInto, setAlert, setState, showPng } from "./ui.js";

const SUBMIT_AFTER_MS = 250;
const INK = "#15171c";
const PAPER = "#ffffff";

/** Wire the section; `onStyle({mu, label})` hears each new style (null when cleared). */
export function initDraw(onStyle) {
  const el = {
    canvas: $("draw-canvas"),
    hint: $("draw-hint"),
    clear: $("draw-clear"),
    file: $("draw-file"),
    sample: $("draw-sample"),
    label: $("draw-label"),
    output: $("draw-output"),
    input: $("draw-input"),
    recon: $("draw-recon"),
    labelOut: $("draw-label-out"),
    labelSource: $("draw-label-source"),
    probs: $("draw-probs"),
    metrics: $("draw-metrics"),
    alert: $("draw-alert"),
  };
  const ctx = el.canvas.getContext("2d");
  const nextSignal = latestOnly();
  let source = null; // what to send: null (blank), "canvas", or an uploaded File
  let last = null;

  buildBars(el.probs);

  function clearCanvas() {
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, el.canvas.width, el.canvas.height);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = el.canvas.width / 13;
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    el.hint.hidden = false;
  }

  function point(event) {
    const box = el.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * el.canvas.width,
      y: ((event.clientY - box.top) / box.height) * el.canvas.height,
    };
  }

  function strokeTo(p) {
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  }

  el.canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    el.canvas.setPointerCapture(event.pointerId);
    last = point(event);
    ctx.beginPath();
    ctx.arc(last.x, last.y, ctx.lineWidth / 2, 0, Math.PI * 2);
    ctx.fill();
    el.hint.hidden = true;
    source = "canvas";
  });
  el.canvas.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const events = event.getCoalescedEvents?.() ?? [];
    for (const e of events.length ? events : [event]) strokeTo(point(e));
  });
  const endStroke = () => {
    if (last === null) return;
    last = null;
    submitSoon();
  };
  el.canvas.addEventListener("pointerup", endStroke);
  el.canvas.addEventListener("pointercancel", endStroke);

  function canvasBlob() {
    return new Promise((resolve) => el.canvas.toBlob((blob) => resolve(new File([blob], "drawing.png", { type: "image/png" })), "image/png"));
  }

  async function submit() {
    if (source === null) return;
    const file = source === "canvas" ? await canvasBlob() : source;
    const label = el.label.value;
    await runInto(el.output, el.alert, nextSignal, async (signal) => {
      const [recon, enc] = await Promise.all([reconstruct(file, label, signal), encode(file, label, signal)]);
      if (signal.aborted) return;
      await Promise.all([
        showPng(el.input, pngUrl(recon.input_png_base64), "The 28 by 28 pixel input the model saw", 168, 168),
        showPng(el.recon, pngUrl(recon.image_png_base64), `The model's reconstruction, read as a ${enc.label}`, 168, 168),
      ]);
      showReading(el, recon, enc);
      onStyle?.({ mu: enc.mu, label: enc.label });
    });
    if (el.output.dataset.state === "error") clearReading(el); // no stale reading under an error
  }
  const submitSoon = debounce(submit, SUBMIT_AFTER_MS);

  el.clear.addEventListener("click", () => {
    clearCanvas();
    source = null;
    nextSignal();
    resetReading(el);
    onStyle?.(null);
  });
  el.label.addEventListener("change", submit);
  el.file.addEventListener("change", async () => {
    const file = el.file.files?.[0];
    el.file.value = ""; // choosing the same file again must fire change again
    if (!file) return;
    source = file;
    await previewFile(file);
    submit();
  });
  el.sample.addEventListener("click", () => drawForMe());

  async function previewFile(file) {
    clearCanvas();
    try {
      const bitmap = await createImageBitmap(file);
      const fit = Math.min(el.canvas.width / bitmap.width, el.canvas.height / bitmap.height);
      const w = bitmap.width * fit;
      const h = bitmap.height * fit;
      ctx.drawImage(bitmap, (el.canvas.width - w) / 2, (el.canvas.height - h) / 2, w, h);
      el.hint.hidden = true;
    } catch {
      // Not an image the browser can show; the server says what is wrong with it.
    }
  }

  // A keyboard-friendly way in: the model writes a random digit (black on white) onto the pad.
  async function drawForMe() {
    const digit = String(Math.floor(Math.random() * 10));
    const params = { text: digit, samples: 1, invert: true, scale: 8 };
    try {
      const { data } = await generate(params, randomSeed());
      const img = new Image();
      img.src = pngUrl(data.image_png_base64);
      await img.decode();
      clearCanvas();
      ctx.drawImage(img, 0, 0, el.canvas.width, el.canvas.height);
      el.hint.hidden = true;
      source = "canvas";
      submit();
    } catch (error) {
      setAlert(el.alert, error instanceof ApiError ? error.message : "The model could not draw a digit.");
      setState(el.output, "error");
    }
  }

  clearCanvas();
  resetReading(el);
}

function buildBars(list) {
  for (let digit = 0; digit < 10; digit += 1) {
    const item = document.createElement("li");
    item.className = "bar-row";
    item.innerHTML =
      `<span class="bar-digit">${digit}</span>` +
      `<span class="bar-track"><span class="bar-fill"></span></span>` +
      `<span class="bar-value">–</span>`;
    list.append(item);
  }
}

function showReading(el, recon, enc) {
  el.labelOut.textContent = String(enc.label);
  const how = enc.label_source === "given" ? "given by you" : "inferred by the model";
  el.labelSource.textContent = `(${how} · ${fmt(enc.metrics?.inference_ms, 1, " ms")})`;
  const probs = enc.label_probs ?? [];
  [...el.probs.children].forEach((item, digit) => {
    const p = Number(probs[digit]) || 0;
    item.querySelector(".bar-fill").style.width = `${(p * 100).toFixed(1)}%`;
    item.querySelector(".bar-value").textContent = `${(p * 100).toFixed(p >= 0.995 || p < 0.1 ? 0 : 1)}%`;
    item.classList.toggle("top", digit === enc.label);
    item.setAttribute("aria-label", `${digit}: ${(p * 100).toFixed(1)} percent`);
  });
  const m = { ...recon, ...(recon.metrics ?? {}) };
  const rows = [
    ["ELBO", fmt(m.elbo ?? enc.metrics?.elbo, 1, " nats"), "Evidence lower bound: higher is a better fit"],
    ["Reconstruction", fmt(m.recon_bce ?? enc.metrics?.recon_bce, 1, " nats"), "Binary cross-entropy of the reconstruction"],
    ["KL", fmt(m.kl ?? enc.metrics?.kl, 1, " nats"), "How far the style is from the average writer"],
    ["Pixel MSE", fmt(m.mse ?? enc.metrics?.mse, 4), "Mean squared error per pixel"],
  ];
  el.metrics.innerHTML = "";
  for (const [name, value, title] of rows) {
    const wrap = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dt.title = title;
    dd.textContent = value;
    wrap.append(dt, dd);
    el.metrics.append(wrap);
  }
}

function resetReading(el) {
  setState(el.output, "idle");
  setAlert(el.alert, "");
  clearReading(el);
}

function clearReading(el) {
  for (const img of [el.input, el.recon]) {
    img.removeAttribute("src");
    img.style.width = "";
  }
  el.input.alt = "No input yet";
  el.recon.alt = "No reconstruction yet";
  el.labelOut.textContent = "";
  el.labelSource.textContent = "";
  for (const item of el.probs.children) {
    item.querySelector(".bar-fill").style.width = "0%";
    item.querySelector(".bar-value").textContent = "–";
    item.classList.remove("top");
    item.removeAttribute("aria-label");
  }
  el.metrics.innerHTML = "";
}

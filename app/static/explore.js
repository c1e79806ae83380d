// Section 4, "Latent explorer": one digit decoded at z whose two chosen dimensions follow the sliders
// (or the 2-D pad); the other dimensions are 0 (the average writer) or the drawn digit's style.

import { generate, pngUrl } from "./api.js";
import { $, debounce, fmt, latestOnly, runInto, showPng, zName } from "./ui.js";

const RANGE = 3;
const DEBOUNCE_MS = 60;

/** Wire the section; returns {setLatentDim(n), setStyle(style)}. */
export function initExplorer() {
  const el = {
    form: $("explore-form"),
    digits: $("explore-digits"),
    x: $("explore-x"),
    y: $("explore-y"),
    xOut: $("explore-x-out"),
    yOut: $("explore-y-out"),
    xName: $("explore-x-name"),
    yName: $("explore-y-name"),
    xDim: $("explore-x-dim"),
    yDim: $("explore-y-dim"),
    fromStyle: $("explore-from-style"),
    reset: $("explore-reset"),
    pad: $("explore-pad"),
    handle: $("explore-handle"),
    output: $("explore-output"),
    image: $("explore-image"),
    meta: $("explore-meta"),
    alert: $("explore-alert"),
  };
  const nextSignal = latestOnly();
  let latentDim = 0;
  let style = null;

  buildDigitChoices(el.digits);

  function digit() {
    return Number(el.form.querySelector("input[name=explore-digit]:checked")?.value ?? 0);
  }

  function z() {
    const base = el.fromStyle.checked && style ? style.mu.slice(0, latentDim) : new Array(latentDim).fill(0);
    base[Number(el.xDim.value)] = Number(el.x.value);
    if (latentDim > 1) base[Number(el.yDim.value)] = Number(el.y.value);
    return base;
  }

  function syncLabels() {
    el.xOut.textContent = Number(el.x.value).toFixed(2);
    el.yOut.textContent = Number(el.y.value).toFixed(2);
    el.xName.textContent = zName(el.xDim.value);
    el.yName.textContent = zName(el.yDim.value);
    el.handle.style.left = `${((Number(el.x.value) + RANGE) / (2 * RANGE)) * 100}%`;
    el.handle.style.top = `${((RANGE - Number(el.y.value)) / (2 * RANGE)) * 100}%`;
  }

  async function render() {
    syncLabels();
    if (latentDim < 1) return;
    const d = digit();
    const vector = z();
    const params = { text: String(d), samples: 1, scale: 1, invert: false, style: vector };
    await runInto(el.output, el.alert, nextSignal, async (signal) => {
      const { data } = await generate(params, null, signal);
      const where = `${zName(el.xDim.value)} = ${fmt(Number(el.x.value), 1)}` +
        (latentDim > 1 ? `, ${zName(el.yDim.value)} = ${fmt(Number(el.y.value), 1)}` : "");
      await showPng(el.image, pngUrl(data.image_png_base64), `The digit ${d} at ${where}`, 224, 224);
      el.image.dataset.z = vector.map((v) => v.toFixed(2)).join(",");
      el.meta.textContent = `${d} at ${where} · ${fmt(data.metrics?.inference_ms, 1, " ms")}`;
    });
  }
  const renderSoon = debounce(render, DEBOUNCE_MS);

  el.form.addEventListener("input", () => {
    syncLabels();
    renderSoon();
  });
  el.form.addEventListener("submit", (event) => event.preventDefault());
  el.fromStyle.addEventListener("change", () => {
    if (el.fromStyle.checked && style) {
      setSlider(el.x, style.mu[Number(el.xDim.value)]);
      setSlider(el.y, style.mu[Number(el.yDim.value)]);
    }
    render();
  });
  el.reset.addEventListener("click", () => {
    el.x.value = "0";
    el.y.value = "0";
    render();
  });
  initPad(el.pad, (fx, fy) => {
    setSlider(el.x, (fx * 2 - 1) * RANGE);
    setSlider(el.y, (1 - fy * 2) * RANGE);
    syncLabels();
    renderSoon();
  });

  return {
    setLatentDim(n) {
      latentDim = n;
      fillDims(el.xDim, n, 0);
      fillDims(el.yDim, n, Math.min(1, n - 1));
      el.y.disabled = n < 2;
      el.yDim.disabled = n < 2;
      render();
    },
    setStyle(next) {
      style = next;
      el.fromStyle.disabled = style === null;
      if (style === null) el.fromStyle.checked = false;
      else el.digits.querySelector(`input[value="${style.label}"]`).checked = true;
      if (latentDim === 0 && style) this.setLatentDim(style.mu.length);
      else render();
    },
  };
}

function setSlider(input, value) {
  const step = Number(input.step) || 0.1;
  const clamped = Math.max(-RANGE, Math.min(RANGE, Number(value) || 0));
  input.value = String(Math.round(clamped / step) * step);
}

function buildDigitChoices(container) {
  for (let d = 0; d < 10; d += 1) {
    const id = `explore-digit-${d}`;
    const input = Object.assign(document.createElement("input"), {
      type: "radio", name: "explore-digit", id, value: String(d), checked: d === 3,
    });
    const label = Object.assign(document.createElement("label"), { htmlFor: id, textContent: String(d) });
    container.append(input, label);
  }
}

function fillDims(select, n, selected) {
  select.innerHTML = "";
  for (let i = 0; i < n; i += 1) {
    select.append(new Option(zName(i), String(i), i === selected, i === selected));
  }
}

// The pad is a pointer shortcut for the two sliders (which stay the accessible controls).
function initPad(pad, onMove) {
  let active = false;
  const move = (event) => {
    const box = pad.getBoundingClientRect();
    const fx = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    const fy = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
    onMove(fx, fy);
  };
  pad.addEventListener("pointerdown", (event) => {
    active = true;
    pad.setPointerCapture(event.pointerId);
    move(event);
  });
  pad.addEventListener("pointermove", (event) => active && move(event));
  const stop = () => {
    active = false;
  };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);
}

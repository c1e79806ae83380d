// Section 1, "Write a number": the form, validated as you type, regenerates the PNG (debounced).

import { generate, parseSeed, pngUrl, randomSeed, seedFromRaw, validateText } from "./api.js";
import { $, debounce, fmt, latestOnly, runInto, setAlert, showPng, spell } from "./ui.js";

const DEBOUNCE_MS = 300;

/** Wire the section; `onModel(version)` hears the model version each answer names. */
export function initWrite(onModel) {
  const el = {
    form: $("write-form"),
    text: $("write-text"),
    textError: $("write-text-error"),
    samples: $("write-samples"),
    samplesError: $("write-samples-error"),
    scale: $("write-scale"),
    temperature: $("write-temperature"),
    temperatureOut: $("write-temperature-out"),
    seed: $("write-seed"),
    seedError: $("write-seed-error"),
    newSeed: $("write-new-seed"),
    invert: $("write-invert"),
    output: $("write-output"),
    image: $("write-image"),
    meta: $("write-meta"),
    download: $("write-download"),
    alert: $("write-alert"),
  };
  const nextSignal = latestOnly();
  el.seed.value = randomSeed();
  // Until the temperature is moved, the server's default applies and its answer says which it is.
  let temperatureTouched = false;

  function fieldError(input, errorEl, message) {
    errorEl.textContent = message;
    input.setAttribute("aria-invalid", String(Boolean(message)));
  }

  function readForm() {
    const text = el.text.value;
    const textProblem = validateText(text);
    fieldError(el.text, el.textError, textProblem);
    const seed = parseSeed(el.seed.value);
    fieldError(el.seed, el.seedError, seed === null ? "A seed is a whole number from 0 to 9223372036854775807." : "");
    const samples = Number(el.samples.value);
    const samplesOk = Number.isInteger(samples) && samples >= 1 && samples <= 16;
    fieldError(el.samples, el.samplesError, samplesOk ? "" : "Choose 1 to 16 rows.");
    if (textProblem || seed === null || !samplesOk) return null;
    const params = { text, samples, invert: el.invert.checked, scale: Number(el.scale.value) };
    if (temperatureTouched) params.temperature = Number(el.temperature.value);
    return { params, seed };
  }

  async function render() {
    el.temperatureOut.textContent = Number(el.temperature.value).toFixed(2);
    const request = readForm();
    if (request === null) {
      nextSignal(); // drop any answer still on its way for the old, now invalid, input
      return;
    }
    const { params, seed } = request;
    await runInto(el.output, el.alert, nextSignal, async (signal) => {
      const { data, raw } = await generate(params, seed, signal);
      const shownSeed = seedFromRaw(raw) ?? seed;
      if (!temperatureTouched && Number.isFinite(data.temperature)) {
        el.temperature.value = String(data.temperature);
        el.temperatureOut.textContent = data.temperature.toFixed(2);
      }
      const rows = params.samples === 1 ? "one sample" : `${params.samples} samples`;
      const alt = `The number ${spell(params.text)} handwritten by the model, ${rows}`;
      await showPng(el.image, pngUrl(data.image_png_base64), alt, 640, 720);
      el.image.dataset.seed = shownSeed;
      el.meta.textContent =
        `Model ${data.model_version} · seed ${shownSeed} · T ${fmt(data.temperature, 2)} · ` +
        `${fmt(data.metrics?.inference_ms, 1, " ms")} · ${data.width}×${data.height} px`;
      el.download.href = el.image.src;
      el.download.download = `handwriting-${params.text.replace(/ /g, "_")}-${shownSeed}.png`;
      el.download.hidden = false;
      onModel?.(data.model_version);
    });
  }

  const renderSoon = debounce(render, DEBOUNCE_MS);
  el.form.addEventListener("input", (event) => {
    if (event.target === el.temperature) {
      temperatureTouched = true;
      el.temperatureOut.textContent = Number(el.temperature.value).toFixed(2);
    }
    readForm(); // inline messages at once; the request waits for a pause in typing
    renderSoon();
  });
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    render();
  });
  el.newSeed.addEventListener("click", () => {
    el.seed.value = randomSeed();
    setAlert(el.alert, "");
    render();
  });
  render();
}

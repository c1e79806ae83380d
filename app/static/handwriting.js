// Section 3, "In my handwriting": any number written with z = the mu of the digit drawn in section 2.

import { generate, pngUrl, validateText } from "./api.js";
import { $, debounce, fmt, latestOnly, runInto, setAlert, setState, showPng, spell } from "./ui.js";

const DEBOUNCE_MS = 300;

/** Wire the section; returns `setStyle(style)` to call with {mu, label} from section 2 (or null). */
export function initHandwriting() {
  const el = {
    form: $("style-form"),
    status: $("style-status"),
    text: $("style-text"),
    textError: $("style-text-error"),
    output: $("style-output"),
    image: $("style-image"),
    meta: $("style-meta"),
    alert: $("style-alert"),
  };
  const nextSignal = latestOnly();
  let style = null;

  function checkText() {
    const problem = validateText(el.text.value);
    el.textError.textContent = problem;
    el.text.setAttribute("aria-invalid", String(Boolean(problem)));
    return problem;
  }

  async function render() {
    const text = el.text.value;
    if (checkText() || style === null) {
      nextSignal();
      return;
    }
    const params = { text, samples: 1, scale: 1, invert: false, style: style.mu };
    await runInto(el.output, el.alert, nextSignal, async (signal) => {
      const { data } = await generate(params, null, signal);
      await showPng(el.image, pngUrl(data.image_png_base64), `The number ${spell(text)} in the style of your ${style.label}`);
      el.meta.textContent = `Model ${data.model_version} · style of your ${style.label} · ${fmt(data.metrics?.inference_ms, 1, " ms")}`;
    });
  }

  const renderSoon = debounce(render, DEBOUNCE_MS);
  el.form.addEventListener("input", () => {
    checkText();
    renderSoon();
  });
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    render();
  });

  return function setStyle(next) {
    style = next;
    if (style === null) {
      nextSignal();
      el.status.textContent = "Draw or upload a digit first: its style is then used to write any number.";
      el.image.removeAttribute("src");
      el.image.style.width = "";
      el.image.alt = "No picture yet";
      el.meta.textContent = "";
      setAlert(el.alert, "");
      setState(el.output, "idle");
      return;
    }
    el.status.textContent = `Using the style of the ${style.label} you gave. Type any number.`;
    render();
  };
}

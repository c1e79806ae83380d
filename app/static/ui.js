// Small DOM helpers shared by the sections: debouncing, latest-request-wins, alerts and images.

import { isAbort } from "./api.js";

/** fn delayed until `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Each call aborts the previous request and returns a fresh AbortSignal: only the latest answer counts. */
export function latestOnly() {
  let controller = null;
  return () => {
    controller?.abort();
    controller = new AbortController();
    return controller.signal;
  };
}

export const $ = (id) => document.getElementById(id);

/** Show a message in an alert region (role=alert), or clear it with "". */
export function setAlert(element, message) {
  element.textContent = message;
  element.classList.toggle("shown", Boolean(message));
}

/** Mark an output region idle / loading / ready / error (styles and tests read data-state). */
export function setState(element, state) {
  element.dataset.state = state;
  element.setAttribute("aria-busy", String(state === "loading"));
}

/**
 * Run `task(signal)` for an output region: loading state, errors in its alert, aborted runs ignored.
 * Resolves to the task's result, or undefined when it failed or was superseded.
 */
export async function runInto(output, alert, nextSignal, task) {
  const signal = nextSignal();
  setState(output, "loading");
  try {
    const result = await task(signal);
    if (signal.aborted) return undefined;
    setAlert(alert, "");
    setState(output, "ready");
    return result;
  } catch (error) {
    if (isAbort(error) || signal.aborted) return undefined;
    setAlert(alert, error?.name === "ApiError" ? error.message : `Something went wrong: ${error?.message ?? error}`);
    setState(output, "error");
    return undefined;
  }
}

/**
 * Show a PNG in an <img> and size it for crisp pixels: a whole-number upscale that fits
 * `maxWidth` x `maxHeight` CSS pixels (CSS max-width still shrinks it on narrow screens).
 */
export function showPng(img, src, alt, maxWidth = 640, maxHeight = 360) {
  return new Promise((resolve, reject) => {
    img.onload = () => {
      const { naturalWidth: w, naturalHeight: h } = img;
      const fit = Math.min(maxWidth / w, maxHeight / h);
      const factor = fit >= 1 ? Math.floor(fit) : fit;
      img.style.width = `${Math.round(w * factor)}px`;
      resolve(img);
    };
    img.onerror = () => reject(new Error("the picture could not be shown"));
    img.alt = alt;
    img.src = src;
  });
}

/** "1.2 ms" style figures, tolerant of a missing value. */
export function fmt(value, digits = 1, unit = "") {
  return Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "–";
}

/** "0123" -> "0 1 2 3" for alt text; spaces read as "blank". */
export function spell(text) {
  return [...text].map((ch) => (ch === " " ? "blank" : ch)).join(" ");
}

/** Subscript digits for latent dimension names: 12 -> "z₁₂". */
export function zName(index) {
  return `z${String(index).replace(/[0-9]/g, (d) => "₀₁₂₃₄₅₆₇₈₉"[d])}`;
}

// The HTTP contract of the service (docs/api.md), as the page uses it: requests, errors in plain
// words, text validation like the API's, and 63-bit seeds kept exact as decimal strings.

export const MAX_SEED = (1n << 63n) - 1n;

/** An API or network failure, with a message a person can act on. */
export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** True for the error fetch throws when a newer request aborted this one. */
export function isAbort(error) {
  return error?.name === "AbortError";
}

/** "" when the text is something /generate accepts, else why not (the API's own rules). */
export function validateText(text) {
  const chars = [...text]; // code points, as the server counts them
  if (chars.length === 0) return "Type at least one digit.";
  if (chars.length > 32) return `That is ${chars.length} characters; the limit is 32.`;
  const bad = chars.find((ch) => !/^[0-9 ]$/.test(ch));
  if (bad !== undefined) {
    const shown = bad === "\t" ? "a tab" : `“${bad}”`;
    return `Only the digits 0–9 and spaces can be written, not ${shown}.`;
  }
  if (!/[0-9]/.test(text)) return "Add at least one digit: spaces alone are blank.";
  return "";
}

/** A seed in [0, 2**63) drawn from the browser's CSPRNG, as a decimal string. */
export function randomSeed() {
  const words = new BigUint64Array(1);
  crypto.getRandomValues(words);
  return (words[0] & MAX_SEED).toString();
}

/** The canonical decimal string of a valid seed, or null (no rounding: BigInt, not Number). */
export function parseSeed(text) {
  const trimmed = text.trim();
  if (!/^[0-9]{1,19}$/.test(trimmed)) return null;
  const value = BigInt(trimmed);
  return value <= MAX_SEED ? value.toString() : null;
}

/** The JSON body for /generate with the seed written as an exact integer literal. */
export function generateBody(params, seed) {
  const json = JSON.stringify(params);
  if (seed === null || seed === undefined) return json;
  if (parseSeed(seed) !== seed) throw new Error(`invalid seed ${seed}`);
  // JSON.stringify of a Number would round seeds above 2**53; splice the digits in instead.
  return `${json.slice(0, -1)}${json.length > 2 ? "," : ""}"seed":${seed}}`;
}

/** The seed as the server wrote it in a JSON response, digits untouched. */
export function seedFromRaw(rawJson) {
  const match = /"seed"\s*:\s*"?([0-9]+)/.exec(rawJson);
  return match ? match[1] : null;
}

/** A data: URL for base64 PNG bytes. */
export function pngUrl(base64) {
  return `data:image/png;base64,${base64}`;
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        const msg = String(item?.msg ?? item ?? "").replace(/^Value error, /, "");
        const field = Array.isArray(item?.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
        return field ? `${field}: ${msg}` : msg;
      })
      .filter(Boolean)
      .join("; ");
  }
  if (detail && typeof detail === "object") return detail.message ?? detail.msg ?? JSON.stringify(detail);
  return "";
}

function statusText(status) {
  switch (status) {
    case 404: return "The model version asked for does not exist.";
    case 413: return "That is too large for the server.";
    case 415: return "The server cannot read that file as an image.";
    case 422: return "The server did not accept these settings.";
    case 429:
    case 503: return "The model is busy or still loading; try again in a moment.";
    default: return status >= 500 ? "The server ran into a problem; try again." : `The request failed (HTTP ${status}).`;
  }
}

async function failure(response) {
  let detail = "";
  try {
    detail = detailText((await response.json()).detail);
  } catch {
    // A body that is not JSON: the status alone has to do.
  }
  const base = statusText(response.status);
  const message = detail && response.status < 500 ? `${base} ${capitalise(detail)}` : base;
  return new ApiError(message.endsWith(".") ? message : `${message}.`, response.status);
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

async function send(path, init) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: { Accept: "application/json", ...init.headers } });
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new ApiError("Could not reach the server. Check your connection and that the service is running.");
  }
  if (!response.ok) throw await failure(response);
  const raw = await response.text();
  try {
    return { data: JSON.parse(raw), raw };
  } catch {
    throw new ApiError("The server sent an answer the page could not read.", response.status);
  }
}

/** POST /generate?format=json; resolves to {data, raw} (raw keeps the seed's exact digits). */
export function generate(params, seed, signal) {
  return send("/generate?format=json", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: generateBody(params, seed),
    signal,
  });
}

function imageForm(file, label) {
  const form = new FormData();
  form.append("file", file, file.name || "digit.png");
  if (label !== "" && label !== null && label !== undefined) form.append("label", String(label));
  return form;
}

/** POST /encode for an image Blob/File; resolves to the parsed JSON. */
export async function encode(file, label, signal) {
  return (await send("/encode", { method: "POST", body: imageForm(file, label), signal })).data;
}

/** POST /reconstruct?format=json for an image Blob/File; resolves to the parsed JSON. */
export async function reconstruct(file, label, signal) {
  return (await send("/reconstruct?format=json", { method: "POST", body: imageForm(file, label), signal })).data;
}

/** GET /v1/models; resolves to the parsed JSON. */
export async function listModels(signal) {
  return (await send("/v1/models", { method: "GET", signal })).data;
}

/** {version, latentDim} of the model serving by default, from a /v1/models answer. */
export function activeModel(listing) {
  const versions = Array.isArray(listing?.versions) ? listing.versions : [];
  const name = listing?.serving ?? listing?.active ?? null;
  const entry = versions.find((v) => (v?.name ?? v?.version) === name) ?? versions.find((v) => v?.active === true);
  const latentDim = entry?.latent_dim;
  return {
    version: name ?? entry?.name ?? null,
    latentDim: Number.isInteger(latentDim) && latentDim > 0 ? latentDim : null,
  };
}

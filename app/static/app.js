// Entry point of the demo page: asks which model is active, then wires the four sections together
// (a digit drawn in section 2 gives the style used by sections 3 and 4).

import { activeModel, listModels } from "./api.js";
import { initDraw } from "./draw.js";
import { initExplorer } from "./explore.js";
import { initHandwriting } from "./handwriting.js";
import { $, setAlert } from "./ui.js";
import { initWrite } from "./write.js";

function showModel(version, latentDim) {
  const parts = [`Model ${version}`];
  if (latentDim) parts.push(`${latentDim}-dimensional style space`);
  $("model-status").textContent = parts.join(" · ");
  $("model-status").classList.add("ok");
}

async function loadModel() {
  try {
    const model = activeModel(await listModels());
    if (model.version) showModel(model.version, model.latentDim);
    return model;
  } catch (error) {
    $("model-status").textContent = "Model status unknown";
    setAlert($("page-alert"), `Could not list the models: ${error.message}`);
    return { version: null, latentDim: null };
  }
}

async function main() {
  const explorer = initExplorer();
  const setHandwriting = initHandwriting();
  initDraw((style) => {
    setHandwriting(style);
    explorer.setStyle(style);
  });
  const model = await loadModel();
  initWrite((version) => {
    if (!$("model-status").classList.contains("ok")) showModel(version, null);
  });
  if (model.latentDim) explorer.setLatentDim(model.latentDim);
  else $("explore-meta").textContent = "Draw a digit in section 2 to explore its style space.";
}

main();

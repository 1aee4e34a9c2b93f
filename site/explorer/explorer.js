// The site's explorer: the notebook explorer's map with no kernel behind it.
//
// site/explorer.py writes this file beside heatmap.js (the notebook explorer's own,
// byte for byte) and explorer-data.json: the maps of a few settings at every ε of the
// slider, computed ahead by the notebook explorer (attn_lib/explore/precomputed.py),
// float32 and uint8 arrays as base64. heatmap.js paints what a model object gives it;
// here that model is a small stand-in for anywidget's, holding the chosen map.

import heatmap from "./heatmap.js";

const DATA = new URL("explorer-data.json", import.meta.url);
const START = "5e-1"; // the ε the notebook explorer opens on, the seed's first column
const COMPONENTS = { query: "Query", key: "Key", value: "Value" };

function buffer(base64) {
  // base64 → a fresh ArrayBuffer (so every float32 map in it is 4-aligned)
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes.buffer;
}

export class Model {
  // What heatmap.js reads of an anywidget model: get(name) and "change:version"; a
  // heatmap.js that asked for more would be refused here, not painted from undefined.
  constructor(values) {
    this.values = { ...values, version: 1 };
    this.callbacks = new Set();
  }

  get(name) {
    if (!(name in this.values)) throw new Error(`the explorer's model has no ${name}`);
    return this.values[name];
  }

  on(event, callback) {
    if (event !== "change:version") throw new Error(`the explorer's model sends no ${event}`);
    this.callbacks.add(callback);
  }

  off(event, callback) {
    this.callbacks.delete(callback);
  }

  set(values) {
    Object.assign(this.values, values, { version: this.values.version + 1 });
    for (const callback of this.callbacks) callback();
  }
}

function control(label, input) {
  const wrapper = document.createElement("label");
  wrapper.style.marginRight = "1.5em";
  wrapper.append(`${label} `, input);
  return wrapper;
}

function select(options) {
  const menu = document.createElement("select");
  for (const [value, text] of options) menu.append(new Option(text, value));
  return menu;
}

async function start(root) {
  const response = await fetch(DATA);
  if (!response.ok) throw new Error(`${DATA.pathname}: ${response.status} ${response.statusText}`);
  const data = await response.json();
  const colours = new DataView(buffer(data.colours));
  const settings = new Map(data.settings.map((s) => [s.name, s]));
  const decoded = new Map(); // "setting/component" → its weights and mask, decoded once

  const setting = select(data.settings.map((s) => [s.name, s.label]));
  const component = select(Object.entries(COMPONENTS));
  const slider = Object.assign(document.createElement("input"), {
    type: "range", min: 0, max: data.epsilons.length - 1, step: 1,
    value: Math.max(0, data.epsilon_labels.indexOf(START)),
  });
  slider.style.width = "320px";
  slider.setAttribute("aria-label", "ε");
  const shown = document.createElement("output");
  shown.style.fontFamily = "monospace";
  const controls = document.createElement("div");
  controls.className = "attn-explorer-controls";
  controls.append(control("Setting", setting), control("Component", component),
    control("ε", slider), shown);
  const note = document.createElement("p");
  note.className = "attn-explorer-note";
  const map = document.createElement("div");

  function view() {
    const chosen = settings.get(setting.value);
    const drawn = chosen.components.find((c) => c.component === component.value);
    const key = `${chosen.name}/${drawn.component}`;
    if (!decoded.has(key)) {
      decoded.set(key, { weights: buffer(drawn.weights), mask: new DataView(buffer(drawn.mask)) });
    }
    const { weights, mask } = decoded.get(key);
    const index = Number(slider.value);
    const [rows, columns] = drawn.shape;
    const size = 4 * rows * columns;
    shown.value = `ε = ${data.epsilon_labels[index]}`;
    note.textContent = drawn.note;
    return {
      shape: drawn.shape, weights: new DataView(weights, index * size, size), mask,
      tokens: drawn.tokens, title: drawn.titles[index], alt: drawn.alts[index], colours,
    };
  }

  const model = new Model(view());
  root.replaceChildren(controls, note, map);
  heatmap.render({ model, el: map });
  for (const [input, event] of [[setting, "change"], [component, "change"], [slider, "input"]]) {
    input.addEventListener(event, () => model.set(view()));
  }
  const precomputed = document.createElement("p");
  const labels = data.settings.map((s) => s.label).join("; ");
  const [low, high] = [data.epsilon_labels[0], data.epsilon_labels.at(-1)];
  precomputed.append(
    `Precomputed: ${labels}; each with Query, Key or Value modified, at ` +
      `${data.epsilons.length} values of ε from ${low} to ${high}. Any other source, kind, ` +
      "text, layer, head or ε is not precomputed: run it live with ",
    Object.assign(document.createElement("code"), { textContent: "./run.sh lab" }),
    ", which opens ",
    Object.assign(document.createElement("code"), { textContent: "notebooks/explore.ipynb" }),
    " in JupyterLab (run all its cells).",
  );
  root.append(precomputed);
}

const root = document.getElementById("attn-explorer");
start(root).catch((error) => {
  root.textContent = `The explorer could not start: ${error.message}`;
  console.error(error);
});

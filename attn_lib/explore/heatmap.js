// The explorer's heatmap, painted in the page (attn_lib/explore/heatmap.py sends it).
//
// The kernel sends a (rows, columns) map of float32 weights, a mask of one byte a cell
// (1: a future key the query cannot see), the token labels, the title and a 256-entry
// RGBA table of the house colour map (RdBu_r on 0..1, sampled by matplotlib). A cell of
// weight w takes entry min(255, floor(w * 256)), as matplotlib's colour map does; a
// masked cell is dark grey under a darker cross-hatch, as in the static panels
// (attn_lib.figures.plot.MASKED: no colour of RdBu_r). Hovering a cell
// shows its query, key and weight; clicking keeps that cell's readout until the next
// click. After each paint the root's data-version is the kernel's version, and data-cell
// a cell's side in pixels: a canvas's cells are not in the page's DOM, so these say what
// it painted (tests/lab.py reads the canvas by them; benchmarks/browser.py times the paint
// by data-version's change).

const SIDE = 480; // CSS pixels of the map's longer side (cells of 2 pixels at least)
const HATCH = [51, 51, 51, 255]; // matplotlib's grey "0.2"
const PAPER = [115, 115, 115, 255]; // matplotlib's grey "0.45"
const HATCH_SPACING = 6; // pixels between the hatch's "/" (and "\\") lines
const TICKS = [0, 0.2, 0.4, 0.6, 0.8, 1];
const LABEL_SPACE = 11; // pixels a token label needs along its axis

function el(tag, className, style = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  Object.assign(node.style, style);
  return node;
}

function floats(view) {
  // A DataView of float32 bytes, as a Float32Array (copied where it is not 4-aligned).
  const { buffer, byteOffset, byteLength } = view;
  return byteOffset % 4 === 0
    ? new Float32Array(buffer, byteOffset, byteLength / 4)
    : new Float32Array(buffer.slice(byteOffset, byteOffset + byteLength));
}

function bytes(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export function colourIndex(weight) {
  return Math.max(0, Math.min(255, Math.floor(weight * 256)));
}

function render({ model, el: root }) {
  root.classList.add("attn-heatmap");
  const title = el("div", "attn-heatmap-title", {
    textAlign: "center", fontSize: "12px", margin: "4px 0",
  });
  const query = el("div", "", { writingMode: "vertical-rl", transform: "rotate(180deg)",
    textAlign: "center", fontSize: "12px" });
  query.textContent = "Query";
  const rowLabels = el("div", "attn-heatmap-rows", { position: "relative" });
  const map = el("canvas", "attn-heatmap-map", { imageRendering: "pixelated", cursor: "crosshair" });
  const bar = el("canvas", "attn-heatmap-bar", { width: "14px", marginLeft: "12px" });
  const barTicks = el("div", "", { position: "relative", width: "28px", fontSize: "10px" });
  const barLabel = el("div", "", { writingMode: "vertical-rl", transform: "rotate(180deg)",
    textAlign: "center", fontSize: "12px" });
  barLabel.textContent = "Attention Weight";
  const columnLabels = el("div", "attn-heatmap-columns", { position: "relative" });
  const key = el("div", "", { textAlign: "center", fontSize: "12px" });
  key.textContent = "Key";
  const readout = el("div", "attn-heatmap-readout", {
    fontFamily: "monospace", fontSize: "12px", minHeight: "1.4em", marginTop: "4px",
  });
  const grid = el("div", "", {
    display: "grid", gridTemplateColumns: "auto auto auto auto auto auto",
    alignItems: "stretch", columnGap: "4px", width: "max-content",
  });
  const blank = () => el("div");
  grid.append(query, rowLabels, map, bar, barTicks, barLabel,
    blank(), blank(), columnLabels, blank(), blank(), blank(),
    blank(), blank(), key, blank(), blank(), blank());
  root.append(title, grid, readout);

  let rows = 0, columns = 0, cell = 1, weights = new Float32Array(0), mask = new Uint8Array(0);
  let colours = new Uint8Array(0), tokens = [], pinned = null, drawnLayout = "";

  function labels(container, horizontal) {
    // Each token at its cell's centre; every k-th where the cells are too small for all.
    container.replaceChildren();
    const count = horizontal ? columns : rows;
    const every = Math.ceil(LABEL_SPACE / cell);
    const size = `${Math.min(11, Math.max(8, cell - 2))}px`;
    for (let i = 0; i < count; i += every) {
      const label = el("span", "", {
        position: "absolute", fontSize: size, whiteSpace: "nowrap", lineHeight: "1",
      });
      label.textContent = tokens[i];
      const centre = `${(i + 0.5) * cell}px`;
      if (horizontal) {
        Object.assign(label.style, { left: centre, top: "2px", writingMode: "vertical-rl",
          transform: "translateX(-50%) rotate(180deg)" });
      } else {
        Object.assign(label.style, { top: centre, right: "2px", transform: "translateY(-50%)" });
      }
      container.append(label);
    }
    const longest = Math.max(1, ...tokens.map((t) => t.length));
    const extent = `${Math.min(120, 7 * longest + 6)}px`;
    if (horizontal) container.style.height = extent;
    else container.style.width = extent;
  }

  function layout() {
    // A new grid of cells or new labels: size the canvases, place the labels.
    cell = Math.max(2, Math.floor(SIDE / Math.max(rows, columns)));
    root.dataset.cell = String(cell); // pixels a cell's side, for the browser test
    map.width = columns * cell;
    map.height = rows * cell;
    Object.assign(map.style, { width: `${map.width}px`, height: `${map.height}px` });
    rowLabels.style.height = `${map.height}px`;
    columnLabels.style.width = `${map.width}px`;
    labels(rowLabels, false);
    labels(columnLabels, true);
    bar.width = 1;
    bar.height = 256;
    bar.style.height = `${map.height}px`;
    const image = bar.getContext("2d").createImageData(1, 256);
    for (let i = 0; i < 256; i++) image.data.set(colours.subarray(4 * (255 - i), 4 * (256 - i)), 4 * i);
    bar.getContext("2d").putImageData(image, 0, 0);
    barTicks.replaceChildren(...TICKS.map((t) => {
      const tick = el("span", "", { position: "absolute", left: "2px",
        top: `${(1 - t) * map.height}px`, transform: "translateY(-50%)" });
      tick.textContent = `– ${t.toFixed(1)}`;
      return tick;
    }));
  }

  function crossed(x, y) {
    return (x + y) % HATCH_SPACING === 0 || (x - y) % HATCH_SPACING === 0; // -0 === 0
  }

  function paint() {
    // One 32-bit RGBA word a pixel, words copied from the colour table.
    const width = map.width;
    const image = new ImageData(width, map.height);
    const pixels = new Uint32Array(image.data.buffer);
    const table = new Uint32Array(colours.slice().buffer);
    const [hatch, paper] = new Uint32Array(new Uint8Array([...HATCH, ...PAPER]).buffer);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < columns; j++) {
        const at = i * columns + j;
        const colour = mask[at] ? 0 : table[colourIndex(weights[at])];
        for (let y = i * cell; y < (i + 1) * cell; y++) {
          for (let x = j * cell; x < (j + 1) * cell; x++) {
            pixels[y * width + x] = mask[at] ? (crossed(x, y) ? hatch : paper) : colour;
          }
        }
      }
    }
    map.getContext("2d").putImageData(image, 0, 0);
  }

  function cellAt(event) {
    const box = map.getBoundingClientRect();
    const i = Math.floor(((event.clientY - box.top) / box.height) * rows);
    const j = Math.floor(((event.clientX - box.left) / box.width) * columns);
    return i >= 0 && i < rows && j >= 0 && j < columns ? [i, j] : null;
  }

  function show(at) {
    if (!at) {
      readout.textContent = "";
      return;
    }
    const [i, j] = at;
    const index = i * columns + j;
    const weight = mask[index] ? "masked (a future key)" : `weight ${weights[index].toPrecision(3)}`;
    readout.textContent = `query ${tokens[i]} (${i}) · key ${tokens[j]} (${j}) · ${weight}${pinned ? " · kept" : ""}`;
  }

  map.addEventListener("mousemove", (event) => { if (!pinned) show(cellAt(event)); });
  map.addEventListener("mouseleave", () => show(pinned));
  map.addEventListener("click", (event) => {
    const at = cellAt(event);
    pinned = at && !(pinned && pinned[0] === at[0] && pinned[1] === at[1]) ? at : null;
    show(pinned ?? at);
  });

  function update() {
    [rows, columns] = model.get("shape");
    weights = floats(model.get("weights"));
    mask = bytes(model.get("mask"));
    colours = bytes(model.get("colours"));
    tokens = model.get("tokens");
    title.textContent = model.get("title");
    root.setAttribute("role", "img");
    root.setAttribute("aria-label", model.get("alt"));
    const current = JSON.stringify([rows, columns, tokens]);
    if (current !== drawnLayout) {
      drawnLayout = current;
      pinned = null;
      layout();
    }
    paint();
    if (pinned) show(pinned);
    root.dataset.version = String(model.get("version"));
  }

  model.on("change:version", update);
  update();
  return () => model.off("change:version", update);
}

export default { render };

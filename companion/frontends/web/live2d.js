// Live2D through pixi-live2d-display, when the user supplies a Cubism 4 model and the Cubism core.
//
// Live2D does not publish the Cubism core on npm: download "Cubism SDK for Web" from
// https://www.live2d.com/en/sdk/download/web/ and copy Core/live2dcubismcore.min.js to
// <data dir>/live2d/live2dcubismcore.min.js. Put models under <data dir>/live2d/models/ and set
// `live2d_model: models/<name>/<name>.model3.json` in the card (extensions.companion).
// pixi.js 6 and pixi-live2d-display load from <data dir>/live2d/vendor/ when present (offline),
// otherwise from jsDelivr.
"use strict";

const LIVE2D_SCRIPTS = [
  { local: "/live2d/live2dcubismcore.min.js", cdn: null, test: () => window.Live2DCubismCore },
  {
    local: "/live2d/vendor/pixi.min.js",
    cdn: "https://cdn.jsdelivr.net/npm/pixi.js@6.5.10/dist/browser/pixi.min.js",
    test: () => window.PIXI,
  },
  {
    local: "/live2d/vendor/cubism4.min.js",
    cdn: "https://cdn.jsdelivr.net/npm/pixi-live2d-display@0.4.0/dist/cubism4.min.js",
    test: () => window.PIXI && window.PIXI.live2d,
  },
];

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(s);
  });
}

async function exists(url) {
  try {
    const r = await fetch(url, { method: "HEAD" });
    return r.ok;
  } catch {
    return false;
  }
}

async function loadLive2DLibraries() {
  for (const lib of LIVE2D_SCRIPTS) {
    if (lib.test()) continue;
    if (await exists(lib.local)) await loadScript(lib.local);
    else if (lib.cdn) await loadScript(lib.cdn);
    else throw new Error(`Live2D Cubism core not found at ${lib.local} (see the README: Live2D)`);
    if (!lib.test()) throw new Error(`${lib.local} loaded but did not define what was expected`);
  }
}

class Live2DAvatar {
  static async create(container, modelUrl, expressionMap) {
    await loadLive2DLibraries();
    const canvas = document.createElement("canvas");
    canvas.className = "live2d-canvas";
    container.innerHTML = "";
    container.appendChild(canvas);
    const app = new PIXI.Application({ view: canvas, autoStart: true, resizeTo: container, backgroundAlpha: 0 });
    const model = await PIXI.live2d.Live2DModel.from(modelUrl, { autoInteract: false });
    app.stage.addChild(model);
    const fit = () => {
      const scale = Math.min(container.clientWidth / model.width, container.clientHeight / model.height) * 0.95;
      model.scale.set(model.scale.x * scale);
      model.x = (container.clientWidth - model.width) / 2;
      model.y = (container.clientHeight - model.height) / 2;
    };
    fit();
    return new Live2DAvatar(container, model, expressionMap || {});
  }

  constructor(container, model, expressionMap) {
    this.container = container;
    this.model = model;
    this.expressionMap = expressionMap;
    this.mouth = 0;
    model.internalModel.on("beforeModelUpdate", () => {
      const core = model.internalModel.coreModel;
      if (core && core.setParameterValueById) core.setParameterValueById("ParamMouthOpenY", this.mouth);
    });
  }

  setExpression(emotion, expression) {
    const name = expression ?? this.expressionMap[emotion] ?? emotion;
    this.container.dataset.mood = window.moodOf(emotion);
    try {
      this.model.expression(name);
    } catch (err) {
      console.warn("Live2D expression", name, err);
    }
  }

  setMouth(value) {
    this.mouth = Math.max(0, Math.min(1, Number(value) || 0));
    this.container.dataset.mouth = this.mouth.toFixed(2);
  }
}

window.Live2DAvatar = Live2DAvatar;

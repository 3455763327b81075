// Runs runtime/web/static/app.js under Node with a minimal stand-in for the DOM, fetch and
// EventSource: feeds it a status (argv[3]) and event records (argv[4], a JSON list of
// [stream, record]), then prints every tile's text as JSON. Used by test_web_page.py where no
// browser exists; it checks the page's logic, not its looks.
"use strict";
const fs = require("fs");
const [, , appPath, statusPath, eventsPath] = process.argv;

class Node {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this._text = "";
    this.style = {}; this.className = ""; }
  setAttribute(k, v) { this.attrs[k] = String(v); if (k === "class") this.className = v; }
  append(...xs) { this.children.push(...xs); }
  replaceChildren(...xs) { this.children = xs; }
  set textContent(v) { this._text = String(v); this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(" "); }
  querySelector(sel) { // ".name" only
    const want = sel.slice(1);
    for (const c of this.children) {
      if ((c.className || "").split(" ").includes(want)) return c;
      const hit = c.querySelector(sel);
      if (hit) return hit;
    }
    return null;
  }
}
const byId = { run: new Node("p"), tiles: new Node("main"), note: new Node("p") };
global.document = { createElement: (t) => new Node(t), getElementById: (id) => byId[id] };
const status = JSON.parse(fs.readFileSync(statusPath, "utf8"));
global.fetch = async () => ({ status: 200, json: async () => status });
const listeners = {};
global.EventSource = class { constructor(url) { this.url = url; }
  addEventListener(name, fn) { listeners[name] = fn; } };
global.setInterval = () => 0;
require(appPath);
setTimeout(() => {
  for (const [name, rec] of JSON.parse(fs.readFileSync(eventsPath, "utf8"))) {
    listeners[name]({ data: JSON.stringify(rec) });
  }
  const tiles = byId.tiles.children.map((t) => ({ stream: t.attrs["data-stream"],
    img: t.children[0].children[0].attrs.src, text: t.textContent }));
  console.log(JSON.stringify({ run: byId.run.textContent, note: byId.note.textContent, tiles }));
}, 50);

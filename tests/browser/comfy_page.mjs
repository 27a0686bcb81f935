#!/usr/bin/env node
// Drive the real ComfyUI front-end in headless Chromium (playwright-core), one browser for many workflows.
//
//   node comfy_page.mjs check     --url URL [--shot-dir DIR] WF.json...  load each UI workflow; report missing
//                                                                  node types, combo values the node does not
//                                                                  offer, and what graphToPrompt would send
//   node comfy_page.mjs queue     --url URL [--shot PNG] WF.json   load, press Queue, wait for the run
//   node comfy_page.mjs api-to-ui --url URL --out-dir DIR API.json...  API prompt -> UI workflow (front-end
//                                                                  loadApiJson + serialize; seeds set to "fixed")
// Prints one line per file: "RESULT {json}". Exit 0 when every file is ok.
// Env: CHROMIUM (default /usr/bin/chromium); playwright-core is resolved from the repo's node_modules.
import { createRequire } from "node:module";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { chromium } = createRequire(path.join(ROOT, "package.json"))("playwright-core");

const [cmd, ...rest] = process.argv.slice(2);
const opts = {};
const files = [];
for (let i = 0; i < rest.length; i++) {
  if (rest[i].startsWith("--")) opts[rest[i].slice(2)] = rest[++i];
  else files.push(rest[i]);
}
const url = (opts.url || "http://127.0.0.1:8188").replace(/\/$/, "");
const timeoutMs = Number(opts.timeout || 300) * 1000;

async function api(p, init) {
  const r = await fetch(url + p, init);
  return r.headers.get("content-type")?.includes("json") ? r.json() : null;
}

async function openApp() {
  // skip the first-run template browser for the default user
  await fetch(url + "/settings", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ "Comfy.TutorialCompleted": true }) });
  const profile = mkdtempSync(path.join(tmpdir(), "lumiere-e2e-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
    viewport: { width: 1400, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(timeoutMs);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e).slice(0, 300)));
  await page.goto(url + "/", { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types &&
    Object.keys(window.LiteGraph.registered_node_types).length > 10);
  const close = async () => { await context.close().catch(() => {}); rmSync(profile, { recursive: true, force: true }); };
  return { page, errors, close };
}

// Load a UI workflow; missing types both from the registry and from what the app itself reports.
async function load(page, workflow) {
  const missingByRegistry = await page.evaluate((wf) => [...new Set(wf.nodes.map((n) => n.type)
    .filter((t) => !window.LiteGraph.registered_node_types[t]))], workflow);
  const missingReported = await page.evaluate(async (wf) => {
    const reported = [];
    const orig = window.app.showMissingNodesError?.bind(window.app);
    window.app.showMissingNodesError = (types, ...r) => {
      reported.push(...types.map((t) => (typeof t === "string" ? t : t.type)));
      return orig?.(types, ...r);
    };
    await window.app.loadGraphData(wf);
    window.app.showMissingNodesError = orig;
    return reported;
  }, workflow);
  // combo values not among the node's options (a newer front-end outlines such a node red and warns on Run)
  const badCombos = await page.evaluate(() => window.app.graph.nodes.flatMap((n) => (n.widgets ?? [])
    .filter((w) => w.type === "combo" && w.options?.values)
    .map((w) => [w, typeof w.options.values === "function" ? w.options.values(w, n) : w.options.values])
    .filter(([w, values]) => Array.isArray(values) && !values.includes(w.value))
    .map(([w]) => `${n.type}.${w.name}=${w.value}`)));
  return { missingByRegistry, missingReported, badCombos,
           nodes: await page.evaluate(() => window.app.graph.nodes.length) };
}

const results = [];
const { page, errors, close } = await openApp();
try {
  for (const file of files) {
    const r = { file, ok: false };
    try {
      const data = JSON.parse(readFileSync(file, "utf8"));
      if (cmd === "check") {
        Object.assign(r, await load(page, data));
        r.prompt = (await page.evaluate(() => window.app.graphToPrompt())).output;
        r.ok = !r.missingByRegistry.length && !r.missingReported.length;
        if (opts["shot-dir"]) {
          await page.evaluate(() => window.app.extensionManager?.command?.execute?.("Comfy.Canvas.FitView")).catch(() => {});
          await page.waitForTimeout(800);
          await page.screenshot({ path: path.join(opts["shot-dir"], path.basename(file, ".json") + ".png") });
        }
      } else if (cmd === "queue") {
        Object.assign(r, await load(page, data));
        const resp = page.waitForResponse((x) => /\/prompt$/.test(x.url()) && x.request().method() === "POST");
        await page.evaluate(() => window.app.queuePrompt(0, 1));
        const res = await resp;
        const body = await res.json().catch(() => null);
        r.httpStatus = res.status();
        r.promptId = body?.prompt_id;
        if (res.status() !== 200) r.promptError = body;
        const end = Date.now() + timeoutMs;
        let entry;
        while (r.promptId && Date.now() < end) {
          entry = (await api(`/history/${r.promptId}`))?.[r.promptId];
          if (["success", "error"].includes(entry?.status?.status_str)) break;
          await new Promise((s) => setTimeout(s, 500));
        }
        r.status = entry?.status?.status_str ?? "timeout";
        r.outputs = Object.values(entry?.outputs ?? {}).flatMap((o) => Object.values(o).flat())
          .filter((f) => f?.filename).map((f) => `${f.type}/${f.subfolder ? f.subfolder + "/" : ""}${f.filename}`);
        r.ok = !r.missingByRegistry.length && !r.missingReported.length && r.status === "success" && r.outputs.length > 0;
        await page.evaluate(() => window.app.extensionManager?.command?.execute?.("Comfy.Canvas.FitView")).catch(() => {});
        await page.waitForTimeout(1000); // let the canvas draw the result
        if (opts.shot) await page.screenshot({ path: opts.shot });
      } else if (cmd === "api-to-ui") {
        const name = path.basename(file);
        await page.evaluate(async ([p, n]) => { await window.app.loadApiJson(p, n); }, [data, name]);
        r.workflow = await page.evaluate(() => {
          for (const node of window.app.graph.nodes)
            for (const w of node.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
          return window.app.graph.serialize();
        });
        writeFileSync(path.join(opts["out-dir"], name), JSON.stringify(r.workflow, null, 2) + "\n");
        r.ok = r.workflow.nodes.length === Object.keys(data).length;
        delete r.workflow;
      } else {
        throw new Error(`unknown command ${cmd}`);
      }
    } catch (e) {
      r.error = String(e?.stack || e).slice(0, 1500);
    }
    r.pageErrors = errors.splice(0);
    results.push(r);
    console.log("RESULT " + JSON.stringify(r));
  }
} finally {
  await close();
}
process.exit(results.every((r) => r.ok) ? 0 : 1);

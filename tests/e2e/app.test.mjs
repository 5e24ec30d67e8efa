// End-to-end test of the Peernotes window: real app binary, real store, driven
// through WebDriver (tauri-driver in front of WebKitWebDriver) under Xvfb.
//
//   PEERNOTES_APP=/abs/debug/peernotes-app PEERNOTES_CLI=/abs/debug/peernotes \
//     xvfb-run -a -s '-screen 0 1280x800x24' node --test tests/e2e/
//
// Zero npm dependencies: plain W3C WebDriver calls with the global `fetch`, all
// to 127.0.0.1. Screenshots go to target/e2e/ (app.png always, failure-*.png and
// failure-*.html on failure). tauri-driver is stopped with SIGTERM only: SIGKILL
// would orphan WebKitWebDriver, which then holds its port and the next run hangs.
//
// Text is read as the `textContent` property, not with Get Element Text: the
// latter runs a "visible text" atom that WebKitWebDriver applies wrongly to an
// element that has `overflow: hidden` itself (as every ellipsised title does),
// reporting it not displayed and its text as "". `textContent` is also exact,
// where visible text collapses whitespace.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const OUT = path.join(REPO, "target", "e2e");

const OVERALL_TIMEOUT_MS = 180_000; // the whole test, start-up and clean-up included
const REQUEST_TIMEOUT_MS = 60_000; // one WebDriver call (session creation starts the app)
const UI_WAIT_MS = 30_000; // waiting for the window to show what we expect

/** The three notes the CLI creates; titles are their first lines. */
const NOTES = [
  {
    title: "Weekly sync — 14 March",
    text: "Weekly sync — 14 March\n\nAttendees: Ana, Bo, Chidi\n\n## Decisions\n- Ship the note list first\n- Pairing review on Thursday\n    indented four spaces\n\ttabbed line",
  },
  {
    title: "Zoë's café list 🍰☕",
    text: "Zoë's café list 🍰☕\nCroissants × 12\nFlat white — oat milk\n日本語のメモ",
  },
  {
    title: "Release checklist",
    text: "Release checklist\n1. Tag v0.1.0\n2. Build the app\n3. Smoke test on a clean machine",
  },
];

function requireBinary(variable) {
  const file = process.env[variable];
  if (!file) throw new Error(`${variable} is not set: point it at the built binary (see the Makefile's e2e target)`);
  if (!path.isAbsolute(file)) throw new Error(`${variable} must be an absolute path, got ${file}`);
  if (!existsSync(file)) throw new Error(`${variable}=${file} does not exist: run \`cargo build -p peernotes-sync -p peernotes-app\` first`);
  return file;
}

function findTauriDriver() {
  if (process.env.TAURI_DRIVER) return process.env.TAURI_DRIVER;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir && existsSync(path.join(dir, "tauri-driver"))) return path.join(dir, "tauri-driver");
  }
  const cargoBin = path.join(homedir(), ".cargo", "bin", "tauri-driver");
  if (existsSync(cargoBin)) return cargoBin;
  throw new Error("tauri-driver not found on PATH or in ~/.cargo/bin: `cargo install --locked tauri-driver --version 2.1.0`");
}

/** A port nothing listens on right now (held open until all are chosen, so they differ). */
async function freePorts(count) {
  const servers = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
      });
      servers.push(server);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value; fails with `what` and the last value seen. */
async function waitFor(what, probe, timeoutMs = UI_WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastError;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      lastError = undefined;
      if (last) return last;
    } catch (err) {
      lastError = err;
    }
    await sleep(200);
  }
  const seen = lastError ? `last error: ${lastError.message}` : `last seen: ${JSON.stringify(last)}`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${seen})`);
}

/** Minimal W3C WebDriver client over fetch. */
class WebDriver {
  constructor(base) {
    this.base = base;
    this.session = null;
  }

  async call(method, route, body) {
    const url = this.base + route;
    const res = await fetch(url, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json; charset=utf-8" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${method} ${route}: HTTP ${res.status}, not JSON: ${text.slice(0, 300)}`);
    }
    const value = json.value;
    if (!res.ok || (value && typeof value === "object" && "error" in value)) {
      throw new Error(`${method} ${route}: ${value?.error ?? res.status}: ${value?.message ?? text.slice(0, 300)}`);
    }
    return value;
  }

  s(route) {
    if (!this.session) throw new Error("no WebDriver session");
    return `/session/${this.session}${route}`;
  }

  async newSession(capabilities) {
    const value = await this.call("POST", "/session", { capabilities: { alwaysMatch: capabilities } });
    this.session = value.sessionId;
    return value;
  }

  async deleteSession() {
    if (!this.session) return;
    const route = this.s("");
    this.session = null;
    await this.call("DELETE", route);
  }

  async findAll(css) {
    const found = await this.call("POST", this.s("/elements"), { using: "css selector", value: css });
    return found.map((el) => Object.values(el)[0]);
  }

  async find(css) {
    const el = await this.call("POST", this.s("/element"), { using: "css selector", value: css });
    return Object.values(el)[0];
  }

  async findIn(parent, css) {
    const el = await this.call("POST", this.s(`/element/${parent}/element`), { using: "css selector", value: css });
    return Object.values(el)[0];
  }

  /** The element's exact text (see the header for why not Get Element Text). */
  text(el) {
    return this.property(el, "textContent");
  }

  displayed(el) {
    return this.call("GET", this.s(`/element/${el}/displayed`));
  }

  property(el, name) {
    return this.call("GET", this.s(`/element/${el}/property/${name}`));
  }

  attribute(el, name) {
    return this.call("GET", this.s(`/element/${el}/attribute/${name}`));
  }

  click(el) {
    return this.call("POST", this.s(`/element/${el}/click`), {});
  }

  /** Waits until the page has painted what the DOM holds now (two animation frames). */
  painted() {
    const script = "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";
    return this.call("POST", this.s("/execute/async"), { script, args: [] });
  }

  async screenshot() {
    try {
      await this.painted();
    } catch (err) {
      console.error(`could not wait for a paint before the screenshot: ${err.message}`);
    }
    return this.call("GET", this.s("/screenshot"));
  }

  source() {
    return this.call("GET", this.s("/source"));
  }
}

/** Starts tauri-driver and waits until it answers /status. */
async function startDriver(env, logFile) {
  const [port, nativePort] = await freePorts(2);
  const log = openSync(logFile, "w");
  const child = spawn(findTauriDriver(), ["--port", String(port), "--native-port", String(nativePort)], {
    env,
    stdio: ["ignore", log, log],
  });
  closeSync(log);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  child.exited = exited;
  child.once("error", (err) => console.error(`tauri-driver: ${err.message}`));

  const driver = new WebDriver(`http://127.0.0.1:${port}`);
  let gone = null;
  exited.then((status) => (gone = status));
  await waitFor(
    `tauri-driver to listen on 127.0.0.1:${port}`,
    async () => {
      if (gone) throw new Error(`tauri-driver exited early (${JSON.stringify(gone)}); see ${logFile}`);
      return (await driver.call("GET", "/status")) !== undefined;
    },
    20_000,
  );
  return { child, driver };
}

/** SIGTERM, then wait; never SIGKILL (see the header). */
async function stopDriver(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  let timer;
  const status = await Promise.race([child.exited, new Promise((resolve) => (timer = setTimeout(resolve, 10_000, null)))]);
  clearTimeout(timer);
  if (status === null) {
    console.error(`tauri-driver (pid ${child.pid}) did not exit within 10 s of SIGTERM; leaving it`);
    child.unref();
  }
}

/** App processes this test started (found by their data dir), so none outlives it. */
function appProcesses(dataDir) {
  const marker = `PEERNOTES_DATA=${dataDir}\0`;
  const pids = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1") + "\0";
      const exe = readFileSync(`/proc/${entry}/cmdline`, "latin1");
      if (environ.includes(marker) && exe.includes("peernotes-app")) pids.push(Number(entry));
    } catch {
      // Process gone or not ours to read.
    }
  }
  return pids;
}

function cli(bin, dataDir, args, input) {
  const env = { ...process.env };
  delete env.PEERNOTES_DATA;
  try {
    return execFileSync(bin, ["--data-dir", dataDir, ...args], { input, env, encoding: "utf8", timeout: 30_000 });
  } catch (err) {
    throw new Error(`peernotes ${args.join(" ")} failed (${err.status ?? err.signal}): ${err.stderr || err.message}`);
  }
}

function saveScreenshot(base64, name) {
  const file = path.join(OUT, name);
  writeFileSync(file, Buffer.from(base64, "base64"));
  return file;
}

test("the window lists notes made with the CLI and shows the one clicked", { timeout: OVERALL_TIMEOUT_MS + 10_000 }, async () => {
  const app = requireBinary("PEERNOTES_APP");
  const peernotes = requireBinary("PEERNOTES_CLI");
  mkdirSync(OUT, { recursive: true });

  const root = mkdtempSync(path.join(tmpdir(), "peernotes-e2e-"));
  const dataDir = path.join(root, "data");
  for (const dir of ["data", "xdg-data", "xdg-cache", "xdg-config"]) mkdirSync(path.join(root, dir));

  let driverProcess = null;
  let driver = null;
  let failed = false;

  const cleanup = async () => {
    if (driver?.session) {
      try {
        await driver.deleteSession();
      } catch (err) {
        console.error(`could not delete the WebDriver session: ${err.message}`);
      }
    }
    if (driverProcess) await stopDriver(driverProcess);
    for (const pid of appProcesses(dataDir)) {
      console.error(`peernotes-app (pid ${pid}) outlived its session; sending SIGTERM`);
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // Already gone.
      }
    }
  };

  // Hard stop: whatever hangs, clean up and leave with a failure.
  const watchdog = setTimeout(() => {
    console.error(`E2E timed out after ${OVERALL_TIMEOUT_MS / 1000} s; cleaning up`);
    cleanup().finally(() => process.exit(1));
  }, OVERALL_TIMEOUT_MS);

  try {
    const ids = NOTES.map((note) => {
      const out = cli(peernotes, dataDir, ["new", "--stdin"], note.text).trim();
      const id = out.split(/\s+/).pop();
      assert.ok(id, `peernotes new printed no id (stdout: ${JSON.stringify(out)})`);
      return id;
    });

    const env = {
      ...process.env,
      PEERNOTES_DATA: dataDir,
      XDG_DATA_HOME: path.join(root, "xdg-data"),
      XDG_CACHE_HOME: path.join(root, "xdg-cache"),
      XDG_CONFIG_HOME: path.join(root, "xdg-config"),
    };
    const started = await startDriver(env, path.join(OUT, "tauri-driver.log"));
    driverProcess = started.child;
    driver = started.driver;

    await driver.newSession({ "tauri:options": { application: app } });

    const items = await waitFor("three .note-item elements in #note-list", async () => {
      const found = await driver.findAll("#note-list .note-item");
      return found.length === NOTES.length ? found : false;
    });

    const titles = [];
    for (const item of items) {
      assert.equal(await driver.displayed(item), true, "each .note-item is displayed");
      titles.push(await driver.text(await driver.findIn(item, ".note-title")));
    }
    assert.deepEqual([...titles].sort(), NOTES.map((n) => n.title).sort(), "the sidebar shows each note's title");

    // Click a note that is not the one shown at start, then check the viewer
    // shows exactly its text.
    let item = null;
    for (const candidate of items) {
      if ((await driver.attribute(candidate, "aria-selected")) !== "true") {
        item = candidate;
        break;
      }
    }
    assert.ok(item, "some note is not selected at start");
    const pickedId = await driver.attribute(item, "data-note-id");
    const pick = ids.indexOf(pickedId);
    assert.ok(pick >= 0, `.note-item data-note-id ${pickedId} is one of the ids the CLI printed (${ids.join(", ")})`);
    const note = NOTES[pick];
    await driver.click(item);

    await waitFor(`#note-title to read ${JSON.stringify(note.title)}`, async () => {
      return (await driver.text(await driver.find("#note-title"))) === note.title;
    });
    const shown = await driver.text(await driver.find("#note-text"));
    assert.equal(shown, note.text, "#note-text shows the clicked note's full text, whitespace intact");
    const selected = await driver.find(`.note-item[data-note-id="${pickedId}"]`);
    assert.equal(await driver.attribute(selected, "aria-selected"), "true", "the clicked note is marked selected");

    const file = saveScreenshot(await driver.screenshot(), "app.png");
    console.log(`screenshot: ${path.relative(REPO, file)}`);
  } catch (err) {
    failed = true;
    if (driver?.session) {
      const stamp = new Date().toISOString().replace(/[:.]/g, "-");
      try {
        console.error(`failure screenshot: ${saveScreenshot(await driver.screenshot(), `failure-${stamp}.png`)}`);
        writeFileSync(path.join(OUT, `failure-${stamp}.html`), await driver.source());
      } catch (shotErr) {
        console.error(`could not capture the failure: ${shotErr.message}`);
      }
    }
    const log = path.join(OUT, "tauri-driver.log");
    if (existsSync(log)) console.error(`--- ${log} (last 2000 chars) ---\n${readFileSync(log, "utf8").slice(-2000)}`);
    throw err;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
    if (failed) console.error(`kept the test's files in ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
});

// Shared pieces of the end-to-end tests: a minimal W3C WebDriver client over
// `fetch` (all to 127.0.0.1), tauri-driver start/stop, launching the real app on
// its own data dir with its network pinned to loopback, the CLI, and failure
// screenshots under target/e2e/.
//
// tauri-driver is stopped with SIGTERM only: SIGKILL would orphan
// WebKitWebDriver, which then holds its port and the next run hangs.
//
// Text is read as the `textContent` property, not with Get Element Text: the
// latter runs a "visible text" atom that WebKitWebDriver applies wrongly to an
// element that has `overflow: hidden` itself (as every ellipsised title does),
// reporting it not displayed and its text as "". The editor's text is read from
// the editor itself (`#editor.editorText()`), as CodeMirror renders only the
// visible lines.

import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const OUT = path.join(REPO, "target", "e2e");

const REQUEST_TIMEOUT_MS = 60_000; // one WebDriver call (session creation starts the app)
export const UI_WAIT_MS = 30_000; // waiting for the window to show what we expect

export function requireBinary(variable) {
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

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value; fails with `what` and the last value seen. */
export async function waitFor(what, probe, timeoutMs = UI_WAIT_MS) {
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
export class WebDriver {
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

  /** Runs `script` (a function body) in the page and returns its result. */
  execute(script, ...args) {
    return this.call("POST", this.s("/execute/sync"), { script, args });
  }

  /** Runs `script` (a function body whose last argument is a callback) in the
   * page and returns what it calls back with. */
  executeAsync(script, ...args) {
    return this.call("POST", this.s("/execute/async"), { script, args });
  }

  /** Types `text` into an element; W3C key codes (KEYS) work inside it. */
  sendKeys(el, text) {
    return this.call("POST", this.s(`/element/${el}/value`), { text });
  }

  /** Presses a key chord (e.g. [KEYS.control, "n"]) on whatever has focus. */
  async chord(keys) {
    const down = keys.map((value) => ({ type: "keyDown", value }));
    const up = [...keys].reverse().map((value) => ({ type: "keyUp", value }));
    await this.call("POST", this.s("/actions"), { actions: [{ type: "key", id: "keyboard", actions: [...down, ...up] }] });
    await this.call("DELETE", this.s("/actions"));
  }
}

/** W3C WebDriver key codes. */
export const KEYS = {
  enter: "\uE007",
  backspace: "\uE003",
  delete: "\uE017",
  escape: "\uE00C",
  control: "\uE009",
  shift: "\uE008",
  arrowLeft: "\uE012",
  arrowRight: "\uE014",
  arrowUp: "\uE013",
  arrowDown: "\uE015",
  home: "\uE011",
  end: "\uE010",
};

/** Starts tauri-driver and waits until it answers /status. */
export async function startDriver(env, logFile) {
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
export async function stopDriver(child) {
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

/** App processes this test started (found by their data dir), so none outlives it.
 * With `children`, also the webview's helper processes (WebKitWebProcess and the
 * like), which inherit the app's environment and write into its cache dir. */
export function appProcesses(dataDir, { children = false } = {}) {
  const marker = `PEERNOTES_DATA=${dataDir}\0`;
  const pids = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1") + "\0";
      const exe = readFileSync(`/proc/${entry}/cmdline`, "latin1");
      if (environ.includes(marker) && (children || exe.includes("peernotes-app"))) pids.push(Number(entry));
    } catch {
      // Process gone or not ours to read.
    }
  }
  return pids;
}

export function cli(bin, dataDir, args, input, env = null) {
  const base = env ?? { ...process.env, PEERNOTES_MDNS: "off", PEERNOTES_RELAY: "off", PEERNOTES_BIND: "127.0.0.1:0" };
  const childEnv = { ...base };
  delete childEnv.PEERNOTES_DATA;
  try {
    return execFileSync(bin, ["--data-dir", dataDir, ...args], { input, env: childEnv, encoding: "utf8", timeout: 60_000 });
  } catch (err) {
    throw new Error(`peernotes ${args.join(" ")} failed (${err.status ?? err.signal}): ${err.stderr || err.message}`);
  }
}

export function saveScreenshot(base64, name) {
  const file = path.join(OUT, name);
  writeFileSync(file, Buffer.from(base64, "base64"));
  return file;
}


/** The environment of an app (or CLI) that must stay on loopback: no mDNS, no
 * relay, its own data dir and its own webview dirs under `root`. */
export function appEnv(root, dataDir) {
  for (const dir of ["xdg-data", "xdg-cache", "xdg-config"]) mkdirSync(path.join(root, dir), { recursive: true });
  return {
    ...process.env,
    PEERNOTES_DATA: dataDir,
    PEERNOTES_BIND: "127.0.0.1:0",
    PEERNOTES_MDNS: "off",
    PEERNOTES_RELAY: "off",
    XDG_DATA_HOME: path.join(root, "xdg-data"),
    XDG_CACHE_HOME: path.join(root, "xdg-cache"),
    XDG_CONFIG_HOME: path.join(root, "xdg-config"),
  };
}

/** A running app under its own tauri-driver, on its own data dir. */
export class AppUnderTest {
  constructor(name, root, dataDir, driverProcess, driver) {
    this.name = name;
    this.root = root;
    this.dataDir = dataDir;
    this.driverProcess = driverProcess;
    this.driver = driver;
  }

  /** Starts tauri-driver and the app (one WebDriver session). */
  static async start(name, root, dataDir) {
    mkdirSync(OUT, { recursive: true });
    const app = requireBinary("PEERNOTES_APP");
    const { child, driver } = await startDriver(appEnv(root, dataDir), path.join(OUT, `tauri-driver-${name}.log`));
    const started = new AppUnderTest(name, root, dataDir, child, driver);
    await driver.newSession({ "tauri:options": { application: app } });
    return started;
  }

  /** Closes the window (the app flushes and exits) and starts it again. */
  async restart() {
    await this.driver.deleteSession();
    await waitFor("the app to exit", async () => appProcesses(this.dataDir).length === 0, 15_000);
    await this.driver.newSession({ "tauri:options": { application: requireBinary("PEERNOTES_APP") } });
  }

  /** Closes the window and stops the driver; any app process left gets SIGTERM. */
  async stop() {
    if (this.driver.session) {
      try {
        await this.driver.deleteSession();
      } catch (err) {
        console.error(`${this.name}: could not delete the WebDriver session: ${err.message}`);
      }
    }
    await stopDriver(this.driverProcess);
    // Closing takes a moment: the app flushes and says goodbye to its peers.
    const deadline = Date.now() + 5_000;
    while (appProcesses(this.dataDir).length > 0 && Date.now() < deadline) await sleep(100);
    for (const pid of appProcesses(this.dataDir)) {
      console.error(`${this.name}: peernotes-app (pid ${pid}) outlived its session; sending SIGTERM`);
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // Already gone.
      }
    }
    // The webview's helpers exit shortly after the app; wait so none writes into
    // the test's directory while it is being removed.
    const helpersDeadline = Date.now() + 5_000;
    while (appProcesses(this.dataDir, { children: true }).length > 0 && Date.now() < helpersDeadline) await sleep(100);
    for (const pid of appProcesses(this.dataDir, { children: true })) {
      console.error(`${this.name}: process ${pid} of the app's session is still running; sending SIGTERM`);
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // Already gone.
      }
    }
  }

  /** Saves a screenshot and the page source for a failure. */
  async captureFailure(label) {
    if (!this.driver.session) return;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    try {
      console.error(`failure screenshot: ${saveScreenshot(await this.driver.screenshot(), `failure-${label}-${this.name}-${stamp}.png`)}`);
      writeFileSync(path.join(OUT, `failure-${label}-${this.name}-${stamp}.html`), await this.driver.source());
    } catch (err) {
      console.error(`could not capture the failure: ${err.message}`);
    }
    const log = path.join(OUT, `tauri-driver-${this.name}.log`);
    if (existsSync(log)) console.error(`--- ${log} (last 2000 chars) ---\n${readFileSync(log, "utf8").slice(-2000)}`);
  }

  async screenshot(name) {
    const file = saveScreenshot(await this.driver.screenshot(), name);
    console.log(`screenshot: ${path.relative(REPO, file)}`);
    return file;
  }

  /** The open note's whole text in the editor, or null. */
  editorText() {
    return this.driver.execute("const e = document.getElementById('editor'); return e && e.editorText ? e.editorText() : null;");
  }

  /** Errors the page reported (see ui/src/errors.ts). */
  pageErrors() {
    return this.driver.execute("return window.peernotesErrors ? window.peernotesErrors.slice() : ['errors.ts is not loaded'];");
  }

  /** Waits until the editor holds an editable document for `noteId` (any note if null). */
  waitEditable(noteId = null) {
    return waitFor(`the editor to be editable${noteId ? ` on ${noteId}` : ""}`, () =>
      this.driver.execute(
        "const e = document.getElementById('editor'); return !!e && e.dataset.state === 'editable' && (arguments[0] === null || e.dataset.noteId === arguments[0]);",
        noteId,
      ),
    );
  }

  /** Types into the editor (it must have focus or be clickable). */
  async type(text) {
    const content = await this.driver.find("#editor .cm-content");
    await this.driver.sendKeys(content, text);
  }
}

/** Clicks a note in the list and times, in the page, until its text shows,
 * until it can be typed in and until it is bound to its document
 * (milliseconds from the click). As soon as it can be typed in, types
 * `early` at its start: before the document has loaded, if that is when
 * typing became possible. */
export function timeOpening(driver, id, firstLine, early) {
  const script = `
    const [id, firstLine, early, done] = arguments;
    const editor = document.getElementById('editor');
    const item = document.querySelector('.note-item[data-note-id="' + id + '"]');
    const t0 = performance.now();
    let shown = null;
    let typable = null;
    let typedWhile = null;
    item.click();
    const check = () => {
      const here = editor.dataset.noteId === id;
      const text = here && editor.editorText ? editor.editorText() : null;
      if (shown === null && text !== null && text.startsWith(firstLine)) shown = performance.now() - t0;
      const state = here ? editor.dataset.state : null;
      if (typable === null && shown !== null && (state === 'early' || state === 'editable')) {
        typable = performance.now() - t0;
        typedWhile = state;
        editor.editorSelect(0, 0);
        editor.editorInsert(early);
      }
      if (state === 'editable' && typable !== null) return done({ shown, typable, typedWhile, editable: performance.now() - t0 });
      if (performance.now() - t0 > 60000) return done({ shown, typable, typedWhile, editable: null });
      requestAnimationFrame(check);
    };
    requestAnimationFrame(check);`;
  return driver.call("POST", driver.s("/execute/async"), { script, args: [id, firstLine, early] });
}

/** Runs `body` with a fresh temp dir; keeps the dir if it fails, and stops
 * every app it started. */
export async function scenario(label, apps, body) {
  const root = mkdtempSync(path.join(tmpdir(), `peernotes-e2e-${label}-`));
  let failed = false;
  try {
    await body(root);
  } catch (err) {
    failed = true;
    for (const app of apps) await app.captureFailure(label);
    throw err;
  } finally {
    for (const app of apps) await app.stop();
    if (failed) console.error(`kept the test's files in ${root}`);
    else removeQuietly(root);
  }
}

/** Removes a passed test's directory. A leftover temp dir is not a failure of
 * the scenario: if something still writes into it, say so and leave it. */
function removeQuietly(root) {
  try {
    rmSync(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  } catch (err) {
    console.error(`could not remove ${root} (${err.code ?? err.message}); leaving it`);
  }
}

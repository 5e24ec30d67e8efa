// End-to-end: the CLI while the app holds the data dir. `peernotes edit` of
// the note open in the window goes through the app's control socket and
// appears in the editor without a reload; `peernotes new` appears in the list;
// a second launch of the app on the same data dir brings the first window to
// the front and exits, leaving one app and one window. And the hand-over: with
// `peernotes serve` holding the data dir, the window opens on a dialog naming
// the daemon; "Take over" has it save and stop, and the notes load here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import path from "node:path";

import { AppUnderTest, appEnv, appProcesses, cli, requireBinary, scenario, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 180_000;

test("CLI edits reach the open window live; a second launch focuses the first", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  await scenario("control", apps, async (root) => {
    const dataDir = path.join(root, "data");
    const id = cli(peernotes, dataDir, ["new", "--stdin"], "Standup notes\n\n- first item\n").trim();

    const app = await AppUnderTest.start("control", root, dataDir);
    apps.push(app);
    const d = app.driver;
    await d.click(await waitFor("the note in the list", async () => (await d.findAll(`.note-item[data-note-id="${id}"]`))[0]));
    await app.waitEditable(id);

    // 1. An edit from the CLI, made while the window has the note open.
    const edited = "Standup notes\n\n- first item\n- added from the terminal\n";
    const out = cli(peernotes, dataDir, ["edit", "--stdin", id.slice(0, 8)], edited);
    assert.equal(out, "", "edit prints nothing on stdout");
    await waitFor("the CLI's edit in the open editor", async () => (await app.editorText()) === edited);

    // 2. A note made from the CLI shows up in the list.
    const made = cli(peernotes, dataDir, ["new", "Made in the terminal"]).trim();
    await waitFor("the CLI's new note in the list", async () => (await d.findAll(`.note-item[data-note-id="${made}"]`)).length === 1);
    const listed = cli(peernotes, dataDir, ["status"]);
    assert.match(listed, /Held by the Peernotes app \(pid \d+\)/, "status names the app holding the data dir");
    await app.screenshot("control-cli-edit.png");

    // 3. A second launch on the same data dir: the first window comes forward.
    const before = appProcesses(dataDir);
    assert.equal(before.length, 1, "one app runs");
    const second = spawnSync(requireBinary("PEERNOTES_APP"), [], { env: appEnv(root, dataDir), encoding: "utf8", timeout: 60_000 });
    assert.equal(second.status, 0, `the second launch exits cleanly: ${second.stderr}`);
    assert.match(second.stderr, /already open .* its window was brought to the front/, second.stderr);
    assert.deepEqual(appProcesses(dataDir), before, "still exactly the first app");
    const handles = await d.call("GET", d.s("/window/handles"));
    assert.equal(handles.length, 1, "one window");
    assert.equal(await app.editorText(), edited, "the open note is untouched");
    assert.deepEqual(await app.pageErrors(), [], "no page errors");
    await app.screenshot("control-second-launch.png");
  });
});

test("with a serve daemon holding the data dir, the window offers to take over, and does", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  let daemon = null;
  try {
    await scenario("takeover", apps, async (root) => {
      const dataDir = path.join(root, "data");
      const id = cli(peernotes, dataDir, ["new", "--stdin"], "Kept by the daemon\n").trim();
      const env = { ...appEnv(root, dataDir) };
      delete env.PEERNOTES_DATA;
      daemon = spawn(peernotes, ["--data-dir", dataDir, "serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      daemon.stdout.on("data", (chunk) => (out += chunk));
      await waitFor("serve to listen", async () => out.includes("listening "));

      const app = await AppUnderTest.start("takeover", root, dataDir);
      apps.push(app);
      const d = app.driver;
      await waitFor("the take-over dialog", () => d.execute("const t = document.getElementById('takeover-dialog'); return !!t && t.open;"));
      const message = await d.text(await d.find("#takeover-message"));
      assert.match(message, new RegExp(`peernotes serve daemon \\(pid ${daemon.pid}`), message);
      await app.screenshot("takeover-offered.png");

      const exited = once(daemon, "exit");
      await d.click(await d.find("#takeover-ok"));
      const [code] = await exited;
      assert.equal(code, 0, "the daemon saved and stopped cleanly");
      daemon = null;
      await waitFor("the daemon's note in the list", async () => (await d.findAll(`.note-item[data-note-id="${id}"]`)).length === 1);
      assert.equal(await d.execute("return document.getElementById('takeover-dialog').open;"), false, "the dialog closed");
      // The window holds the data dir now: the CLI goes through it.
      const made = cli(peernotes, dataDir, ["new", "Made after the take-over"]).trim();
      await waitFor("a CLI note after the take-over", async () => (await d.findAll(`.note-item[data-note-id="${made}"]`)).length === 1);
      assert.match(cli(peernotes, dataDir, ["status"]), /Held by the Peernotes app/);
      assert.deepEqual(await app.pageErrors(), [], "no page errors");
      await app.screenshot("takeover-done.png");
    });
  } finally {
    if (daemon) daemon.kill("SIGKILL");
  }
});

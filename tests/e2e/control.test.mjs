// End-to-end: the CLI while the app holds the data dir. `peernotes edit` of
// the note open in the window goes through the app's control socket and
// appears in the editor without a reload; `peernotes new` appears in the list;
// a second launch of the app on the same data dir brings the first window to
// the front and exits, leaving one app and one window.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
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

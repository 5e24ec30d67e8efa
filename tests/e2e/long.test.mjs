// End-to-end, long histories and long typing:
//
// 1. A note carrying the whole automerge-paper history (259,778 changes) shows
//    its text at once from the store's cached text and takes typing at once;
//    what is typed before its document has loaded is kept, also when the note
//    is left before then; the times are printed (measured in the page, from
//    the click).
// 2. The first 2,000 transactions of seph-blog1 are typed into the editor
//    through WebDriver while the other device (a live-peer) types lines of its
//    own into the same note: both end with the same text, the trace's part is
//    exactly the trace's text, and every one of the peer's lines is there once.
//    Characters are keystrokes and deletions are Backspace over a selection;
//    the cursor is placed by the editor's hook (as a click would), and a
//    newline is inserted as an editor transaction, because Enter continues
//    Markdown lists and would change the text.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { gunzipSync } from "node:zlib";
import path from "node:path";

import { AppUnderTest, KEYS, REPO, appEnv, cli, requireBinary, scenario, timeOpening, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 420_000;

function loadTrace(name) {
  return JSON.parse(gunzipSync(readFileSync(path.join(REPO, "tests", "data", "traces", `${name}.json.gz`))).toString("utf8"));
}

function traceNote(dataDir, name, count) {
  const args = [dataDir, name];
  if (count !== undefined) args.push(String(count));
  return execFileSync(requireBinary("PEERNOTES_TRACE_NOTE"), args, { encoding: "utf8", timeout: 180_000 }).trim();
}

test("a note with 260k changes shows at once and takes typing at once, before its document has loaded", { timeout: TIMEOUT_MS }, async () => {
  const apps = [];
  await scenario("paper", apps, async (root) => {
    const dataDir = path.join(root, "data");
    const trace = loadTrace("automerge-paper");
    const id = traceNote(dataDir, "automerge-paper");
    const small = cli(requireBinary("PEERNOTES_CLI"), dataDir, ["new", "--stdin"], "A small note\n").trim().split(/\s+/).pop();
    const app = await AppUnderTest.start("paper", root, dataDir);
    apps.push(app);
    const d = app.driver;
    await waitFor("both notes in the list", async () => (await d.findAll("#note-list .note-item")).length === 2);
    // Start from the small note, so the click below opens the paper from scratch.
    await d.click(await d.find(`.note-item[data-note-id="${small}"]`));
    await app.waitEditable(small);

    const firstLine = trace.endContent.split("\n")[0];
    const early = "Typed at once. ";
    const times = await timeOpening(d, id, firstLine, early);
    console.log(
      `automerge-paper (259,778 changes): text shown ${times.shown?.toFixed(0)} ms, typable ${times.typable?.toFixed(0)} ms, ` +
        `bound to its document ${times.editable?.toFixed(0)} ms after the click`,
    );
    assert.ok(times.shown !== null, "the cached text was shown");
    assert.equal(times.typedWhile, "early", "typing was possible before the document had loaded");
    assert.ok(times.editable !== null, "the note was bound to its document");
    assert.equal(await app.editorText(), early + trace.endContent, "the editor holds what was typed early, then the paper's text");
    await waitFor("the early edit to reach the store", async () => {
      const shown = cli(requireBinary("PEERNOTES_CLI"), dataDir, ["show", id]);
      return shown.startsWith(`${early}${firstLine}`);
    });

    // And it edits once bound: a keystroke reaches the store.
    await d.execute("document.getElementById('editor').editorSelect(0, 0);");
    await app.type("X");
    await waitFor("the edit to reach the store", async () => {
      const shown = cli(requireBinary("PEERNOTES_CLI"), dataDir, ["show", id]);
      return shown.startsWith(`X${early}${firstLine}`);
    });
    await app.screenshot("paper.png");

    // Typed early, then left before the document loaded: still saved.
    await d.click(await d.find(`.note-item[data-note-id="${small}"]`));
    await app.waitEditable(small);
    const left = "Left before it loaded. ";
    await d.executeAsync(
      `const [id, text, done] = arguments;
       const editor = document.getElementById('editor');
       document.querySelector('.note-item[data-note-id="' + id + '"]').click();
       const check = () => {
         if (editor.dataset.noteId === id && editor.dataset.state === 'early') {
           editor.editorSelect(0, 0);
           editor.editorInsert(text);
           return done(true);
         }
         requestAnimationFrame(check);
       };
       requestAnimationFrame(check);`,
      id,
      left,
    );
    await d.click(await d.find(`.note-item[data-note-id="${small}"]`));
    await app.waitEditable(small);
    await waitFor("what was typed before leaving to reach the store", async () => {
      const shown = cli(requireBinary("PEERNOTES_CLI"), dataDir, ["show", id]);
      return shown.startsWith(`${left}X${early}${firstLine}`);
    });
    assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
  });
});

/** `live-peer` over stdin (see tests/src/bin/live-peer.rs). */
async function startPeer(root, dataDir) {
  const child = spawn(requireBinary("PEERNOTES_LIVE_PEER"), [dataDir], { env: appEnv(path.join(root, "peer-env"), dataDir), stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const line = async () => {
    const next = await lines.next();
    if (next.done) throw new Error("live-peer exited");
    return next.value;
  };
  assert.match(await line(), /^ready /);
  return {
    ask: async (command) => {
      child.stdin.write(`${command}\n`);
      return line();
    },
    quit: async () => {
      if (child.exitCode !== null) return;
      child.stdin.write("quit\n");
      await new Promise((resolve) => child.once("exit", resolve));
    },
  };
}

test("2,000 trace edits typed while the other device types: same text, nothing lost or doubled", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  let peer = null;
  try {
    await scenario("typing", apps, async (root) => {
      const EDITS = 2000;
      const PEER_LINES = 100;
      const MARK = "=== typed below ===\n";
      const dataA = path.join(root, "alice");
      const dataB = path.join(root, "bob");
      const space = cli(peernotes, dataA, ["space", "create", "Team"]).trim();
      const note = cli(peernotes, dataA, ["new", "--space", "Team", "--stdin"], MARK).trim().split(/\s+/).pop();
      // Bob joins by ticket from the CLI (pairing through the app is the sync test's part).
      const inviter = spawn(peernotes, ["--data-dir", dataA, "invite", "--space", "Team"], { env: appEnv(path.join(root, "a-env"), dataA), stdio: ["ignore", "pipe", "ignore"] });
      const ticket = await new Promise((resolve, reject) => {
        createInterface({ input: inviter.stdout }).on("line", (l) => l.startsWith("ticket ") && resolve(l.slice(7)));
        inviter.once("exit", (code) => reject(new Error(`invite exited ${code}`)));
      });
      cli(peernotes, dataB, ["join", ticket, "--name", "Bob"]);
      await new Promise((resolve) => (inviter.exitCode !== null ? resolve() : inviter.once("exit", resolve)));
      assert.ok(space);

      const app = await AppUnderTest.start("typing", root, dataA);
      apps.push(app);
      const d = app.driver;
      peer = await startPeer(root, dataB);
      await waitFor("the note in the list", async () => (await d.findAll(`.note-item[data-note-id="${note}"]`)).length === 1);
      await d.click(await d.find(`.note-item[data-note-id="${note}"]`));
      await app.waitEditable(note);
      await waitFor("Bob connected", async () => (await d.text(await d.find("#status-bar"))).includes("1 peer"));

      // Bob types his lines above the mark, one every 50 ms, while Alice types the trace below it.
      assert.equal(await peer.ask(`prepend-lines ${note} ${PEER_LINES} 50`), "ok");
      const trace = loadTrace("seph-blog1");
      let expected = trace.startContent;
      const started = Date.now();
      // Runs of plain typing (each insert right after the last, no newline)
      // go out as one Element Send Keys; the cursor stays put under Bob's
      // concurrent edits, which is part of what is tested.
      let pending = "";
      let cursor = -1; // trace offset where the editor's cursor is, if known
      const flush = async () => {
        if (pending !== "") await app.type(pending);
        pending = "";
      };
      for (const txn of trace.txns.slice(0, EDITS)) {
        for (const [pos, del, ins] of txn.patches) {
          expected = expected.slice(0, pos) + ins + expected.slice(pos + del);
          if (del === 0 && pos === cursor && !ins.includes("\n")) {
            pending += ins;
            cursor += ins.length;
            continue;
          }
          await flush();
          // Place the cursor (or select what to delete) relative to the mark.
          await d.execute(
            "const [pos, del, mark] = arguments; const e = document.getElementById('editor'); const base = e.editorText().indexOf(mark) + mark.length; e.editorSelect(base + pos, base + pos + del);",
            pos,
            del,
            MARK,
          );
          if (del > 0) await app.type(KEYS.backspace);
          const parts = ins.split("\n");
          for (let i = 0; i < parts.length; i++) {
            if (i > 0) await d.execute("document.getElementById('editor').editorInsert('\\n');");
            if (parts[i] !== "") await app.type(parts[i]);
          }
          cursor = pos + ins.length;
        }
      }
      await flush();
      console.log(`typed ${EDITS} trace transactions in ${((Date.now() - started) / 1000).toFixed(1)} s`);

      const settled = await waitFor("both sides to hold the same text with all of Bob's lines", async () => {
        const [mine, theirs] = [await app.editorText(), await peer.ask(`text ${note}`).then((l) => JSON.parse(l.slice(5)))];
        return mine === theirs && mine.split("\n").filter((l) => l.startsWith("bob line ")).length === PEER_LINES ? mine : false;
      }, 120_000);
      const [above, below] = [settled.slice(0, settled.indexOf(MARK)), settled.slice(settled.indexOf(MARK) + MARK.length)];
      assert.equal(below, expected, "the typed part is exactly the trace's text after 2,000 transactions");
      const bobLines = above.split("\n").filter((l) => l !== "");
      assert.equal(bobLines.length, PEER_LINES, "every one of Bob's lines, none doubled");
      assert.equal(new Set(bobLines).size, PEER_LINES, "no line twice");
      await app.screenshot("typing.png");
      assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
    });
  } finally {
    if (peer) await peer.quit();
  }
});

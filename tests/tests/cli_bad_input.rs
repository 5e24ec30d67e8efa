//! Bad input to the `peernotes` CLI: each case must get a message that says what is
//! wrong, the exit code documented in `peernotes --help` (`peernotes_sync::exit_code`),
//! and must leave every note that was there before exactly as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peernotes_sync::{exit_code, Node, NodeOptions};
use peernotes_tests::{peernotes, run_with_stdin, stderr, stdout};

const STORE_FILE: &str = "peernotes.sqlite3";

fn run(data: &Path, args: &[&str]) -> Output {
    peernotes(data).args(args).output().expect("run peernotes")
}

fn run_ok(data: &Path, args: &[&str]) -> Output {
    let output = run(data, args);
    assert!(
        output.status.success(),
        "peernotes {args:?} failed with {:?}: {}",
        output.status.code(),
        stderr(&output)
    );
    output
}

/// Asserts the exit code and that the message on stderr holds every key word.
fn assert_exits_with(output: &Output, code: i32, key_words: &[&str]) {
    let message = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit code {code}; stderr: {message}"
    );
    for word in key_words {
        assert!(
            message.contains(word),
            "the message does not mention {word:?}: {message}"
        );
    }
}

fn create_note(data: &Path, text: &str) -> String {
    let mut cmd = peernotes(data);
    cmd.args(["new", "--stdin"]);
    let output = run_with_stdin(cmd, text.as_bytes());
    assert!(output.status.success(), "new: {}", stderr(&output));
    stdout(&output).trim().to_string()
}

fn edit_from_stdin(data: &Path, id: &str, text: &[u8]) -> Output {
    let mut cmd = peernotes(data);
    cmd.args(["edit", id, "--stdin"]);
    run_with_stdin(cmd, text)
}

/// What `peernotes show` prints for `id`, byte for byte, from a fresh process.
fn shown(data: &Path, id: &str) -> Vec<u8> {
    run_ok(data, &["show", id]).stdout
}

fn note_ids(data: &Path) -> Vec<String> {
    let output = run_ok(data, &["list", "--json"]);
    let notes: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let mut ids: Vec<String> = notes
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Every note's text, sorted: the user-visible content of a data dir.
fn all_texts(data: &Path) -> Vec<Vec<u8>> {
    let mut texts: Vec<Vec<u8>> = note_ids(data).iter().map(|id| shown(data, id)).collect();
    texts.sort();
    texts
}

fn bytes_of(texts: &[&str]) -> Vec<Vec<u8>> {
    let mut bytes: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    bytes.sort();
    bytes
}

// ---------------------------------------------------------------------------
// A damaged store

/// Bytes that are not an SQLite database, the same on every run.
fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 37 % 251) as u8).collect()
}

fn assert_every_command_refuses_the_damaged_store(tmp: &Path, data: &Path) {
    let store = data.join(STORE_FILE);
    let before = std::fs::read(&store).unwrap();
    let vault = tmp.join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    std::fs::write(vault.join("a.md"), "imported?\n").unwrap();
    let export_to = tmp.join("exported");
    let commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["show", "00"],
        vec!["search", "note"],
        vec!["new", "written over the damage?"],
        vec!["init"],
        vec!["import", vault.to_str().unwrap()],
        vec!["export", export_to.to_str().unwrap()],
        vec!["compact"],
    ];
    for args in commands {
        let output = run(data, &args);
        assert_exits_with(
            &output,
            exit_code::DAMAGED,
            &["damaged", store.to_str().unwrap(), "Nothing was changed"],
        );
        assert!(
            std::fs::read(&store).unwrap() == before,
            "`peernotes {args:?}` changed the damaged store"
        );
    }
    assert!(!export_to.exists(), "export created its folder anyway");
}

#[test]
fn a_store_overwritten_with_garbage_is_reported_damaged_and_left_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    create_note(&data, "a note that was there\n");
    std::fs::write(data.join(STORE_FILE), garbage(8192)).unwrap();

    assert_every_command_refuses_the_damaged_store(tmp.path(), &data);
}

#[test]
fn a_store_with_an_intact_header_but_scribbled_pages_is_reported_damaged_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    create_note(&data, "a note that was there\n");
    let store = data.join(STORE_FILE);
    let mut bytes = std::fs::read(&store).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    // Keep SQLite's 100-byte header so the file still looks like a database.
    let scribble = garbage(bytes.len());
    bytes[100..].copy_from_slice(&scribble[100..]);
    std::fs::write(&store, &bytes).unwrap();

    assert_every_command_refuses_the_damaged_store(tmp.path(), &data);
}

/// The newest chunk of `id` in the store, as (seq, bytes).
fn newest_chunk(conn: &rusqlite::Connection, id: &str) -> (i64, Vec<u8>) {
    conn.query_row(
        "SELECT seq, data FROM chunks WHERE note_id = ?1 ORDER BY seq DESC LIMIT 1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn chunk_count(conn: &rusqlite::Connection, id: &str) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM chunks WHERE note_id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// Cuts the newest chunk of `id` to half its length, as a torn write would.
/// Returns the seq and the bytes left in it.
fn truncate_newest_chunk(data: &Path, id: &str) -> (i64, Vec<u8>) {
    let conn = rusqlite::Connection::open(data.join(STORE_FILE)).unwrap();
    let (seq, bytes) = newest_chunk(&conn, id);
    let truncated = bytes[..bytes.len() / 2].to_vec();
    conn.execute(
        "UPDATE chunks SET data = ?1 WHERE seq = ?2",
        rusqlite::params![truncated, seq],
    )
    .unwrap();
    (seq, truncated)
}

/// The quarantine as (seq, note id, bytes).
fn quarantine(data: &Path) -> Vec<(i64, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(data.join(STORE_FILE)).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, note_id, data FROM quarantine ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

fn history_lines(output: &Output) -> usize {
    stdout(output).lines().count()
}

#[test]
fn a_truncated_chunk_is_set_aside_with_a_warning_and_the_note_still_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let other = create_note(&data, "Other note\nuntouched\n");
    let id = create_note(&data, "Draft\nversion 1\n");
    let versions = [
        "Draft\nversion 2\n",
        "Draft\nversion 3\n",
        "Draft\nversion 4\n",
    ];
    for text in versions {
        let output = edit_from_stdin(&data, &id, text.as_bytes());
        assert!(output.status.success(), "edit: {}", stderr(&output));
    }
    let last = versions[versions.len() - 1];
    let changes_before = history_lines(&run_ok(&data, &["log", &id]));
    {
        let conn = rusqlite::Connection::open(data.join(STORE_FILE)).unwrap();
        assert!(
            chunk_count(&conn, &id) >= 4,
            "each CLI run should have stored its own chunk"
        );
    }
    let (seq, truncated) = truncate_newest_chunk(&data, &id);

    let output = run(&data, &["log", &id]);

    // The note is still readable from its other chunks, so `log` succeeds (exit 0)
    // and warns; only a note with no readable chunk at all is an error (exit 5).
    assert_exits_with(
        &output,
        exit_code::OK,
        &["warning", &id[..8], "set aside", "quarantine"],
    );
    assert!(
        !stderr(&output).contains('\u{1b}'),
        "terminal colour codes in a piped warning: {:?}",
        stderr(&output)
    );
    assert_eq!(
        history_lines(&output),
        changes_before - 1,
        "the history should lack exactly the change in the damaged chunk: {}",
        stdout(&output)
    );
    assert_eq!(
        quarantine(&data),
        vec![(seq, id.clone(), truncated)],
        "the quarantine must keep the damaged chunk's bytes as they were"
    );
    {
        let conn = rusqlite::Connection::open(data.join(STORE_FILE)).unwrap();
        assert_ne!(newest_chunk(&conn, &id).0, seq, "the chunk is still live");
    }
    // A second look does not warn again: the chunk is out of the way.
    let again = run_ok(&data, &["log", &id]);
    assert!(!stderr(&again).contains("warning"), "{}", stderr(&again));
    assert_eq!(shown(&data, &id), last.as_bytes());
    assert_eq!(shown(&data, &other), b"Other note\nuntouched\n");
    let other_log = run_ok(&data, &["log", &other]);
    assert!(
        !stderr(&other_log).contains("warning"),
        "{}",
        stderr(&other_log)
    );
}

#[test]
fn a_note_whose_only_chunk_is_truncated_is_reported_damaged_but_still_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let other = create_note(&data, "Other note\nuntouched\n");
    let id = create_note(&data, "Only\none chunk\n");
    let (seq, truncated) = truncate_newest_chunk(&data, &id);

    let output = run(&data, &["log", &id]);

    assert_exits_with(
        &output,
        exit_code::DAMAGED,
        &[&id, "could not be read", "quarantine", "peernotes show"],
    );
    assert_eq!(quarantine(&data), vec![(seq, id.clone(), truncated)]);
    assert_eq!(shown(&data, &id), b"Only\none chunk\n");
    assert_eq!(shown(&data, &other), b"Other note\nuntouched\n");
    run_ok(&data, &["log", &other]);
}

// ---------------------------------------------------------------------------
// Files and standard input that are not UTF-8

#[test]
fn a_latin1_file_stops_the_whole_import_unless_skip_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    create_note(&data, "Earlier note\n");
    let vault = tmp.path().join("vault");
    std::fs::create_dir_all(vault.join("old")).unwrap();
    std::fs::write(vault.join("Good.md"), "Good\nplain UTF-8\n").unwrap();
    std::fs::write(vault.join("Also good.md"), "Also good\n").unwrap();
    // "café au lait" in Latin-1: 0xe9 is not UTF-8.
    std::fs::write(vault.join("old/latin1.md"), b"caf\xe9 au lait\n").unwrap();
    let before = all_texts(&data);

    let output = run(&data, &["import", vault.to_str().unwrap()]);

    assert_exits_with(
        &output,
        exit_code::USAGE,
        &[
            "nothing was imported",
            "latin1.md",
            "UTF-8",
            "--skip-invalid",
        ],
    );
    assert_eq!(all_texts(&data), before, "import half-happened");

    let output = run_ok(
        &data,
        &["import", "--skip-invalid", vault.to_str().unwrap()],
    );

    let message = stderr(&output);
    assert!(
        message.contains("skipped") && message.contains("latin1.md"),
        "{message}"
    );
    assert_eq!(
        all_texts(&data),
        bytes_of(&["Earlier note\n", "Good\nplain UTF-8\n", "Also good\n"])
    );
}

#[test]
fn text_on_standard_input_that_is_not_utf8_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let id = create_note(&data, "Keep me\n");

    let mut cmd = peernotes(&data);
    cmd.args(["new", "--stdin"]);
    let output = run_with_stdin(cmd, b"caf\xe9\n");
    assert_exits_with(
        &output,
        exit_code::USAGE,
        &["not UTF-8", "nothing was changed"],
    );

    let output = edit_from_stdin(&data, &id, b"Keep me\n\xff\xfe\n");
    assert_exits_with(
        &output,
        exit_code::USAGE,
        &["not UTF-8", "nothing was changed"],
    );

    assert_eq!(note_ids(&data), vec![id.clone()]);
    assert_eq!(shown(&data, &id), b"Keep me\n");
}

// ---------------------------------------------------------------------------
// Note ids

#[test]
fn an_id_that_matches_no_note_is_not_found_and_a_non_hex_id_is_bad_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let id = create_note(&data, "Existing\n");
    // Hex, but not the start of the one note's id.
    let unknown = if id.starts_with('0') { "1" } else { "0" }.repeat(32);

    for command in ["show", "log", "rm", "restore", "edit"] {
        let output = run(&data, &[command, &unknown]);
        assert_exits_with(
            &output,
            exit_code::NOT_FOUND,
            &["no note matches", &unknown, "peernotes list"],
        );
        let output = run(&data, &[command, "not-an-id"]);
        assert_exits_with(
            &output,
            exit_code::USAGE,
            &["not-an-id", "is not a note id", "hexadecimal"],
        );
    }
    let too_long = format!("{id}0");
    assert_exits_with(
        &run(&data, &["show", &too_long]),
        exit_code::USAGE,
        &["is not a note id"],
    );
    assert_eq!(note_ids(&data), vec![id.clone()]);
    assert_eq!(shown(&data, &id), b"Existing\n");
}

#[test]
fn a_prefix_shared_by_several_notes_asks_for_more_of_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Seventeen notes: at least two share a first hex digit.
    let ids: Vec<String> = {
        let node = Node::open(NodeOptions::new(&data)).unwrap();
        let ids = (0..17)
            .map(|i| node.create(&format!("note {i}\n")).unwrap().to_string())
            .collect();
        node.close().unwrap();
        ids
    };
    let (prefix, sharing) = ('0'..='9')
        .chain('a'..='f')
        .map(|c| (c, ids.iter().filter(|id| id.starts_with(c)).count()))
        .max_by_key(|(_, n)| *n)
        .unwrap();
    assert!(sharing >= 2);

    let output = run(&data, &["show", &prefix.to_string()]);

    assert_exits_with(
        &output,
        exit_code::NOT_FOUND,
        &[&format!("matches {sharing} notes"), "type more of the id"],
    );
    assert!(output.stdout.is_empty(), "printed a note anyway");
}

// ---------------------------------------------------------------------------
// Data dirs that cannot be used

#[test]
fn a_data_dir_under_a_regular_file_cannot_be_used() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-folder");
    std::fs::write(&file, b"someone's file\n").unwrap();
    let data = file.join("data");

    for args in [vec!["init"], vec!["new", "lost?"]] {
        let output = run(&data, &args);
        assert_exits_with(
            &output,
            exit_code::ERROR,
            &["cannot use", data.to_str().unwrap()],
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"someone's file\n");
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_read_only_folder_cannot_be_used_and_its_notes_survive() {
    if running_as_root() {
        eprintln!("skipped: as root, a read-only folder does not stop writes");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // A data dir that would have to be created in a read-only folder.
    let parent = tmp.path().join("read-only");
    std::fs::create_dir(&parent).unwrap();
    set_mode(&parent, 0o500);
    let data = parent.join("data");
    let output = run(&data, &["init"]);
    set_mode(&parent, 0o700);
    assert_exits_with(
        &output,
        exit_code::ERROR,
        &["cannot use", data.to_str().unwrap(), "ermission denied"],
    );
    assert!(!data.exists());

    // An existing data dir made read-only.
    let data = tmp.path().join("data");
    let id = create_note(&data, "Written before\n");
    set_mode(&data, 0o500);
    let output = run(&data, &["new", "written after"]);
    set_mode(&data, 0o700);
    assert_exits_with(
        &output,
        exit_code::ERROR,
        &[data.join(STORE_FILE).to_str().unwrap()],
    );
    assert_eq!(note_ids(&data), vec![id.clone()]);
    assert_eq!(shown(&data, &id), b"Written before\n");
}

#[test]
fn a_second_writer_on_an_open_data_dir_is_told_who_holds_it_and_readers_are_not_blocked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = Node::open(NodeOptions::new(&data)).unwrap();
    let id = node.create("Open in the app\n").unwrap().to_string();
    node.flush().unwrap();
    let pid = format!("pid {}", std::process::id());

    let output = run(&data, &["new", "from the CLI"]);
    assert_exits_with(
        &output,
        exit_code::IN_USE,
        &["in use", &pid, data.to_str().unwrap()],
    );
    // Reading needs no lock: list and show work while the writer is open.
    let listed = run_ok(&data, &["list"]);
    assert!(stdout(&listed).contains(&id[..8]), "{listed:?}");
    assert_eq!(shown(&data, &id), b"Open in the app\n");
    drop(node);

    assert_eq!(
        note_ids(&data),
        vec![id.clone()],
        "the refused `new` wrote a note"
    );
    assert_eq!(shown(&data, &id), b"Open in the app\n");
    let output = run_ok(&data, &["new", "now it works"]);
    let new_id = stdout(&output).trim().to_string();
    assert_eq!(shown(&data, &new_id), b"now it works");
}

#[test]
fn reading_a_data_dir_that_does_not_exist_suggests_init_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("never-created");
    let export_to = tmp.path().join("export");
    let commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["list", "--trash"],
        vec!["show", "3f2a9c1e"],
        vec!["search", "anything"],
        vec!["log", "3f2a9c1e"],
        vec!["rm", "3f2a9c1e"],
        vec!["edit", "3f2a9c1e"],
        vec!["export", export_to.to_str().unwrap()],
        vec!["compact"],
    ];
    for args in commands {
        let output = run(&data, &args);
        assert_exits_with(
            &output,
            exit_code::NOT_FOUND,
            &[
                "no Peernotes data",
                data.to_str().unwrap(),
                "peernotes init",
            ],
        );
        assert!(!data.exists(), "`peernotes {args:?}` created the data dir");
    }
    assert!(!export_to.exists());
}

// ---------------------------------------------------------------------------
// The editor

/// A `peernotes edit` whose editor is `editor` and whose temporary files go in `tmp`.
fn edit_in(data: &Path, tmp: &Path, id: &str, editor: &str) -> Output {
    let mut cmd: Command = peernotes(data);
    cmd.args(["edit", id])
        .env("EDITOR", editor)
        .env("TMPDIR", tmp)
        .output()
        .expect("run peernotes edit")
}

/// The editor files `peernotes` kept in `tmp`.
fn kept_files(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("peernotes-") && name.ends_with(".md")
        })
        .collect()
}

#[test]
fn an_editor_that_fails_leaves_the_note_unchanged_and_keeps_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let editor_tmp = tmp.path().join("editor-tmp");
    std::fs::create_dir(&editor_tmp).unwrap();
    let id = create_note(&data, "Before\nthe editor\n");

    let output = edit_in(&data, &editor_tmp, &id, "false");

    let kept = kept_files(&editor_tmp);
    assert_eq!(kept.len(), 1, "expected one kept file: {kept:?}");
    assert_exits_with(
        &output,
        exit_code::ERROR,
        &["`false`", "was not changed", kept[0].to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"Before\nthe editor\n");
    assert_eq!(shown(&data, &id), b"Before\nthe editor\n");
}

#[test]
fn an_editor_that_saves_bytes_that_are_not_utf8_leaves_the_note_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let editor_tmp = tmp.path().join("editor-tmp");
    std::fs::create_dir(&editor_tmp).unwrap();
    let script = tmp.path().join("latin1-editor.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf 'caf\\351\\n' > \"$1\"\n").unwrap();
    set_mode(&script, 0o755);
    let id = create_note(&data, "Before\nthe editor\n");

    let output = edit_in(&data, &editor_tmp, &id, script.to_str().unwrap());

    let kept = kept_files(&editor_tmp);
    assert_eq!(kept.len(), 1, "expected one kept file: {kept:?}");
    assert_exits_with(
        &output,
        exit_code::USAGE,
        &["not UTF-8", "was not changed", kept[0].to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"caf\xe9\n");
    assert_eq!(shown(&data, &id), b"Before\nthe editor\n");
}

// ---------------------------------------------------------------------------
// Usage

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run_ok(&tmp.path().join("data"), &["--help"]);
    let help = stdout(&output);
    for command in [
        "init", "new", "list", "show", "edit", "search", "rm", "restore", "log", "import",
        "export", "compact",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help does not list `{command}`:\n{help}"
        );
    }
    assert!(help.contains("Exit codes"), "{help}");
    assert!(!tmp.path().join("data").exists());
}

#[test]
fn a_misspelt_command_is_bad_usage_and_suggests_the_right_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (typo, meant) in [("shwo", "show"), ("exprot", "export"), ("serach", "search")] {
        let output = run(&data, &[typo]);
        assert_exits_with(
            &output,
            exit_code::USAGE,
            &[typo, "similar subcommand", &format!("'{meant}'")],
        );
    }
    assert!(!data.exists());
}

#[test]
fn the_node_id_is_stable_and_its_key_file_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = peernotes_tests::peernotes(&data)
        .arg("id")
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let id = peernotes_tests::stdout(&first).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let again = peernotes_tests::peernotes(&data)
        .arg("id")
        .output()
        .unwrap();
    assert_eq!(peernotes_tests::stdout(&again).trim(), id);
    let mode = std::fs::metadata(data.join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

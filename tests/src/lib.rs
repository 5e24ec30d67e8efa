//! Shared helpers for Peernotes' integration tests: editing traces, running the
//! `peernotes` binary as a user would, measuring child processes and heaps
//! (`heap`), `peernotes serve` as a test process (`daemon`), a lossy UDP
//! forwarder (`lossy`), and a hostile member speaking the sync protocol
//! (`mallory`).

pub mod daemon;
pub mod heap;
pub mod lossy;
pub mod mallory;
pub mod replica;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peernotes_sync::membership::Role;
use peernotes_sync::Splice;
use serde::Deserialize;

/// A sequential editing trace (see `tests/data/traces/README.md`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequentialTrace {
    pub start_content: String,
    pub end_content: String,
    pub txns: Vec<TraceTxn>,
}

#[derive(Debug, Deserialize)]
pub struct TraceTxn {
    pub patches: Vec<(usize, usize, String)>,
}

impl TraceTxn {
    pub fn splices(&self) -> Vec<Splice> {
        splices(&self.patches)
    }
}

/// A concurrent editing trace: transactions form a DAG through `parents`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrentTrace {
    pub end_content: String,
    pub num_agents: usize,
    pub txns: Vec<ConcurrentTxn>,
}

#[derive(Debug, Deserialize)]
pub struct ConcurrentTxn {
    pub parents: Vec<usize>,
    pub agent: usize,
    pub patches: Vec<(usize, usize, String)>,
}

impl ConcurrentTxn {
    pub fn splices(&self) -> Vec<Splice> {
        splices(&self.patches)
    }
}

impl ConcurrentTrace {
    /// Applies every transaction to `note` on its agent's node (`node_of`),
    /// once that node has (by sync, if the nodes differ) every parent
    /// transaction, at the state the parents define. `created` is the note's
    /// state before the first transaction. Fails if parents never arrive
    /// within 60 s; polls every `poll` while waiting.
    pub async fn replay<'a>(
        &self,
        node_of: impl Fn(usize) -> &'a peernotes_sync::Node,
        note: &peernotes_sync::NoteId,
        created: &peernotes_sync::Heads,
        poll: std::time::Duration,
    ) -> anyhow::Result<()> {
        let mut after: Vec<peernotes_sync::Heads> = Vec::with_capacity(self.txns.len());
        for (t, txn) in self.txns.iter().enumerate() {
            let base = if txn.parents.is_empty() {
                created.clone()
            } else {
                peernotes_sync::Heads::union(txn.parents.iter().map(|&p| &after[p]))
            };
            let node = node_of(txn.agent);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !node.has(note, &base) {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "txn {t}: its parents never reached agent {}",
                    txn.agent
                );
                tokio::time::sleep(poll).await;
            }
            after.push(node.splice_many_at(note, &base, &txn.splices())?);
        }
        Ok(())
    }
}

/// Loads a concurrent trace from `tests/data/traces/<name>.json.gz`.
pub fn load_concurrent_trace(name: &str) -> anyhow::Result<ConcurrentTrace> {
    Ok(serde_json::from_str(&read_trace(name)?)?)
}

fn read_trace(name: &str) -> anyhow::Result<String> {
    let path = traces_dir().join(format!("{name}.json.gz"));
    let file =
        std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json)?;
    Ok(json)
}

/// A trace's `[pos, delete, insert]` patches as splices.
fn splices(patches: &[(usize, usize, String)]) -> Vec<Splice> {
    patches
        .iter()
        .map(|(pos, delete, insert)| Splice {
            pos: *pos,
            delete: *delete,
            insert: insert.clone(),
        })
        .collect()
}

/// Puts `member` into a new space of `owner`'s called "Team": `owner` adds it as
/// a member and it accepts, as pairing would do. Returns the space.
/// A space `owner` creates, with every one of `members` added and joining it.
pub fn shared_space(
    name: &str,
    owner: &peernotes_sync::Node,
    members: &[&peernotes_sync::Node],
) -> peernotes_sync::Result<peernotes_sync::SpaceId> {
    let space = owner.create_space(name)?;
    for member in members {
        owner.add_member(space, member.node_id(), "member", Role::Editor)?;
        member.join_space(space, owner.node_id())?;
    }
    Ok(space)
}

pub fn team(
    owner: &peernotes_sync::Node,
    member: &peernotes_sync::Node,
) -> peernotes_sync::SpaceId {
    let team = owner.create_space("Team").unwrap();
    owner
        .add_member(team, member.node_id(), "Bob", Role::Editor)
        .unwrap();
    member.join_space(team, owner.node_id()).unwrap();
    team
}

/// A device for network tests: a `Node` in its own temp dir and its
/// `Transport`, bound as `config` says and accepting connections.
pub struct Device {
    pub node: std::sync::Arc<peernotes_sync::Node>,
    pub net: peernotes_sync::net::Transport,
    pub dir: tempfile::TempDir,
}

pub async fn device(config: &peernotes_sync::net::NetConfig) -> anyhow::Result<Device> {
    let dir = tempfile::tempdir()?;
    let node = std::sync::Arc::new(peernotes_sync::Node::open(
        peernotes_sync::NodeOptions::new(dir.path()),
    )?);
    let net = peernotes_sync::net::Transport::bind(node.clone(), config).await?;
    net.spawn_accept();
    Ok(Device { node, net, dir })
}

/// The folder holding the traces copied into this repository.
pub fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/traces")
}

/// Loads `tests/data/traces/<name>.json.gz`.
pub fn load_sequential_trace(name: &str) -> anyhow::Result<SequentialTrace> {
    Ok(serde_json::from_str(&read_trace(name)?)?)
}

/// The `peernotes` binary built alongside these tests (override with PEERNOTES_CLI).
pub fn peernotes_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PEERNOTES_CLI") {
        return PathBuf::from(path);
    }
    // Test binaries live in <target>/<profile>/deps; the CLI in <target>/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = profile_dir.join("peernotes");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p peernotes-sync`",
        bin.display()
    );
    bin
}

/// A `peernotes` command on `data_dir`, with no editor or data dir leaking in
/// from the environment, and its network pinned to loopback: no mDNS, no relay
/// (a test that wants them sets them again).
pub fn peernotes(data_dir: &Path) -> Command {
    let mut cmd = Command::new(peernotes_bin());
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("PEERNOTES_DATA")
        .env_remove("VISUAL")
        .env_remove("EDITOR");
    pin_to_loopback(&mut cmd);
    cmd
}

/// Runs `peernotes` on `data_dir` with `args`, as a user would; it must
/// succeed. Returns its standard output, trimmed.
pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let output = peernotes(data_dir)
        .args(args)
        .output()
        .expect("run peernotes");
    assert!(output.status.success(), "peernotes {args:?}: {output:?}");
    stdout(&output).trim().to_string()
}

/// Makes the device of `data_dir` (set up through the CLI, as a user would) a
/// member of a new space of `owner`'s, accepted on its side. Returns the space
/// and the `--connect` argument that reaches `owner` at `owner_addr`.
pub fn share_with_cli_device(
    owner: &peernotes_sync::Node,
    owner_addr: &iroh::EndpointAddr,
    data_dir: &Path,
) -> (peernotes_sync::SpaceId, String) {
    let member = cli(data_dir, &["id"]);
    let space = owner.create_space("Team").unwrap();
    owner
        .add_member(space, &member, "Bob", Role::Editor)
        .unwrap();
    let space_arg = space.to_string();
    cli(data_dir, &["space", "join", &space_arg, owner.node_id()]);
    let at = owner_addr
        .ip_addrs()
        .next()
        .copied()
        .expect("a direct address");
    (space, format!("{}@{at}", owner.node_id()))
}

/// Runs `ip` (iproute2) with `args`; a refusal fails the test, naming the command.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
    assert!(
        output.status.success(),
        "the kernel refused `ip {}` (this test needs root and network namespaces): {}",
        args.join(" "),
        stderr(&output)
    );
}

/// Sets the network settings a test process must have: loopback, no mDNS, no
/// relay.
pub fn pin_to_loopback(cmd: &mut Command) {
    cmd.env("PEERNOTES_BIND", "127.0.0.1:0")
        .env("PEERNOTES_MDNS", "off")
        .env("PEERNOTES_RELAY", "off");
}

/// Starts `peernotes invite` with `args` on loopback and returns it with the
/// ticket it printed.
pub fn invite(data_dir: &Path, args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = peernotes(data_dir)
        .arg("invite")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peernotes invite");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ticket = loop {
        let line = lines.next().expect("invite printed a ticket").unwrap();
        if let Some(ticket) = line.strip_prefix("ticket ") {
            break ticket.to_string();
        }
    };
    (child, ticket)
}

/// Runs a command with `stdin` as its standard input.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peernotes");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("wait for peernotes")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Peak resident memory, in bytes, of the largest child process waited for so far.
pub fn children_peak_rss_bytes() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage.ru_maxrss as u64 * 1024
}

/// A run count from the environment (how `make soak` raises them), else `default`.
pub fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small seeded generator, so a failing run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        (Rng::new(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

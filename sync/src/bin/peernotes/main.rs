//! `peernotes`: the headless command line over `Node` — everything the app does,
//! scriptable. It parses arguments, calls the façade, prints results and maps
//! errors onto exit codes; it holds no logic of its own.

mod editor;
mod output;
mod pair;
mod serve;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use peernotes_sync::control::{self, Client, Device};
use peernotes_sync::membership::Role;
use peernotes_sync::node::device_name;
use peernotes_sync::pairing::{ShortCode, Ticket};
use peernotes_sync::{
    exit_code, vault, DataDir, Error, InviteBy, ListFilter, Node, NodeEvent, NodeOptions, SpaceId,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (I/O, full disk, editor failed, ...)
  2  bad usage or bad input
  3  note or data dir not found
  4  data dir in use by another Peernotes process
  5  store or note damaged";

/// Peernotes: offline-first notes that sync directly between your devices.
#[derive(Parser)]
#[command(name = "peernotes", version, after_help = EXIT_CODES)]
struct Cli {
    /// Data dir to use [default: $PEERNOTES_DATA, else the platform's data dir]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log more (repeat for even more); or set PEERNOTES_LOG=debug
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data dir and an empty store, and print where it is
    Init,
    /// Print this device's node id (how peers know it)
    Id,
    /// Create a note from TEXT, from standard input, or in $EDITOR
    New {
        /// The note's text (words are joined with spaces)
        text: Vec<String>,
        /// Read the note's text from standard input
        #[arg(long, conflicts_with = "text")]
        stdin: bool,
        /// The space to put it in (name or id) [default: your private space]
        #[arg(long)]
        space: Option<String>,
    },
    /// List notes, most recently edited first
    List {
        /// List the notes in the trash instead
        #[arg(long)]
        trash: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a note's text exactly as stored
    Show {
        /// Note id, or the start of one
        id: String,
        /// Print JSON with the note's metadata
        #[arg(long)]
        json: bool,
    },
    /// Edit a note in $EDITOR (or replace its text from standard input)
    Edit {
        /// Note id, or the start of one
        id: String,
        /// Read the new text from standard input
        #[arg(long)]
        stdin: bool,
    },
    /// Full-text search over titles and text (last word may be a prefix)
    Search {
        #[arg(required = true)]
        query: Vec<String>,
        /// Most results to show
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Move notes to the trash (undo with `restore`)
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Take notes out of the trash
    Restore {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show a note's change history, newest first
    Log {
        id: String,
        /// Most changes to show
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Import every .md file under DIR as a new note
    Import {
        dir: PathBuf,
        /// Import the readable files even if some are not UTF-8 text
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Export every note as a .md file into DIR (new or empty)
    Export {
        dir: PathBuf,
        /// Also export notes in the trash
        #[arg(long)]
        trash: bool,
    },
    /// Fold each note's and each space's stored changes into one snapshot and shrink the store
    Compact,
    /// Invite another device into a space: prints a one-time ticket (or short
    /// code) and waits
    Invite {
        /// The space (name or id) [default: your private space, for your own devices]
        #[arg(long)]
        space: Option<String>,
        /// Print a short code such as 7-amber-falcon instead of a ticket, for a
        /// device on the same LAN (found by mDNS)
        #[arg(long)]
        code: bool,
        /// Minutes until the ticket or code expires
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// The joiner's role: owner, editor or viewer
        #[arg(long, default_value = "editor")]
        role: Role,
    },
    /// Join a space with a ticket or short code from `peernotes invite`, and sync
    /// it once
    Join {
        /// The ticket (starts with `peernotes1`)
        #[arg(required_unless_present = "code", conflicts_with = "code")]
        ticket: Option<String>,
        /// A short code such as 7-amber-falcon, from `peernotes invite --code` on
        /// the same LAN
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        /// The name other members see for this device [default: its host name]
        #[arg(long)]
        name: Option<String>,
    },
    /// Show, per space and member, whether they have everything from this device
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Run an always-on peer that syncs with members' devices until stopped.
    /// Network settings come from config.toml in the data dir
    Serve {
        /// A peer to keep connected, as <node id>@<ip:port> (repeatable), for
        /// members that mDNS or the relay cannot find
        #[arg(long = "connect", value_name = "PEER")]
        connect: Vec<String>,
    },
    /// Spaces: shared notebooks and who is in them
    Space {
        #[command(subcommand)]
        command: SpaceCommand,
    },
    /// Your devices: link another one as yours, list them, revoke a lost one
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Link another device of yours: it gets your Private space and every
    /// space you are in, with your role there. Run `peernotes join` with the
    /// ticket or code on that device
    Link {
        /// Print a short code such as 7-amber-falcon instead of a ticket, for a
        /// device on the same LAN (found by mDNS)
        #[arg(long)]
        code: bool,
        /// Minutes until the ticket or code expires
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// List your devices
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of your devices (a lost laptop) in every space; your other
    /// devices keep their access
    Remove {
        /// The device's node id (see `peernotes device list`)
        node_id: String,
    },
}

#[derive(Subcommand)]
enum SpaceCommand {
    /// Create a space with this device as its only member; prints its id
    Create {
        #[arg(required = true)]
        name: Vec<String>,
    },
    /// List spaces, your private space first
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List a space's members
    Members {
        /// Space name or id
        space: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a device to a space by its node id (it can then sync the space)
    AddMember {
        /// Space name or id
        space: String,
        /// The device's node id (`peernotes id` on that device)
        node_id: String,
        /// A name to show for it
        #[arg(long, default_value = "")]
        name: String,
        /// What it may do: owner (manages members), editor or viewer (reads)
        #[arg(long, default_value = "editor")]
        role: Role,
    },
    /// Give a member another role (owners only)
    Role {
        /// Space name or id
        space: String,
        /// The member's node id
        node_id: String,
        /// owner, editor or viewer
        role: Role,
    },
    /// Leave a space: its members stop syncing it with this device
    Leave {
        /// Space name or id
        space: String,
    },
    /// Accept a space a member added this device to; it arrives on the next sync
    Join {
        /// The space's id
        space_id: String,
        /// Node id of the member who added this device
        inviter: String,
    },
    /// Remove a member: this device stops syncing the space with them
    RemoveMember {
        /// Space name or id
        space: String,
        /// The member's node id
        node_id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("peernotes: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<Error>())
                .map_or(exit_code::ERROR, Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERNOTES_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let dir = DataDir::resolve(cli.data_dir)?;
    let creates = matches!(
        cli.command,
        Command::Init
            | Command::Id
            | Command::New { .. }
            | Command::Import { .. }
            | Command::Join { .. }
            | Command::Space {
                command: SpaceCommand::Create { .. }
            }
    );
    // Commands that only read need no lock, so they work while the app is open.
    let reads_only = matches!(
        cli.command,
        Command::List { .. }
            | Command::Show { .. }
            | Command::Search { .. }
            | Command::Export { .. }
            | Command::Status { .. }
    );
    let mut options = NodeOptions::new(&dir);
    options.create = creates;
    options.read_only = reads_only;
    match open_or_reach(options)? {
        Opened::Node(node) => run_with_node(node, cli.command),
        Opened::Holder(client) => run_through(&client, &dir, cli.command),
    }
}

/// The data dir opened here, or the process holding it, reached over its
/// control socket.
enum Opened {
    Node(Node),
    Holder(Client),
}

/// How long a writing command waits for another short-lived command holding
/// the data dir (one that serves no control socket) to finish.
const WAIT_FOR_LOCK: Duration = Duration::from_secs(3);

fn open_or_reach(options: NodeOptions) -> anyhow::Result<Opened> {
    let started = Instant::now();
    loop {
        match Node::open(options.clone()) {
            Ok(node) => {
                if node.is_writer() {
                    // Holding the lock: a socket here is a killed holder's.
                    control::remove_stale_socket(&options.data_dir);
                }
                return Ok(Opened::Node(node));
            }
            Err(in_use @ Error::DataDirInUse { .. }) => {
                if let Some(client) = Client::connect(&options.data_dir)? {
                    return Ok(Opened::Holder(client));
                }
                if started.elapsed() > WAIT_FOR_LOCK {
                    return Err(in_use.into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn run_with_node(node: Node, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Serve { connect } => {
            serve::run(node, connect)?;
            return Ok(exit_code::OK);
        }
        Command::Invite {
            space,
            code,
            minutes,
            role,
        } => {
            let space = space_or_private(&node, space)?;
            pair::invite(node, space, invite_by(code), minutes, role)?;
            return Ok(exit_code::OK);
        }
        Command::Join { ticket, code, name } => {
            let invitation = invitation_text(ticket, code)?;
            pair::join(node, &invitation, name)?;
            return Ok(exit_code::OK);
        }
        Command::Device {
            command: DeviceCommand::Link { code, minutes },
        } => {
            pair::link(node, invite_by(code), minutes)?;
            return Ok(exit_code::OK);
        }
        _ => {}
    }
    let events = node.subscribe();
    let code = dispatch(&node, &node, command)?;
    node.close()?;
    for event in events.try_iter() {
        if let NodeEvent::ChunkQuarantined { id, error } = event {
            eprintln!(
                "peernotes: warning: part of note {} could not be read and was set aside \
                 (kept in the store's quarantine): {error}",
                id.short()
            );
        }
    }
    Ok(code)
}

/// Runs a command through the process holding the data dir: writes go to its
/// `Node`, so its window shows them at once and its peers get them; reads
/// that need no writer use a read-only `Node` here.
fn run_through(holder: &Client, dir: &Path, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Serve { .. } => {
            let who = holder.holder();
            Err(Error::DataDirInUse {
                dir: dir.to_path_buf(),
                pid: Some(who.pid),
            })
            .with_context(|| format!("the {} already syncs this data dir", who.kind))
        }
        Command::Invite {
            space,
            code,
            minutes,
            role,
        } => {
            let space = space_or_private(holder, space)?;
            let joiner =
                holder.invite(space, invite_by(code), minutes, role, &mut |invitation| {
                    pair::show_invitation(invitation, minutes)
                })?;
            pair::invited(&joiner);
            Ok(exit_code::OK)
        }
        Command::Device {
            command: DeviceCommand::Link { code, minutes },
        } => {
            holder.invite_device(invite_by(code), minutes, &mut |invitation| {
                pair::show_invitation(invitation, minutes)
            })?;
            pair::linked();
            Ok(exit_code::OK)
        }
        Command::Join { ticket, code, name } => {
            let invitation = invitation_text(ticket, code)?;
            let name = name.unwrap_or_else(device_name);
            let (joined, notes) = holder.join(
                &invitation,
                &name,
                &mut |line| eprintln!("{line}"),
                &mut pair::paired,
            )?;
            pair::joined(&joined, notes);
            Ok(exit_code::OK)
        }
        command => {
            let mut options = NodeOptions::new(dir);
            options.read_only = true;
            let node = Node::open(options)?;
            dispatch(&node, holder, command)
        }
    }
}

fn space_or_private(device: &dyn Device, typed: Option<String>) -> anyhow::Result<SpaceId> {
    Ok(match typed {
        Some(typed) => device.find_space(&typed)?,
        None => device.private_space()?,
    })
}

fn invite_by(code: bool) -> InviteBy {
    if code {
        InviteBy::Code
    } else {
        InviteBy::Ticket
    }
}

/// The ticket or code given to `join`, checked before anything starts.
fn invitation_text(ticket: Option<String>, code: Option<String>) -> anyhow::Result<String> {
    match (ticket, code) {
        (_, Some(code)) => Ok(ShortCode::parse(&code)?.to_string()),
        (Some(ticket), None) => {
            Ticket::decode(&ticket)?;
            Ok(ticket.trim().to_string())
        }
        (None, None) => unreachable!("clap requires a ticket or a code"),
    }
}

/// Runs a command that is not networked. `reader` answers reads (a read-only
/// `Node` suffices); `device` takes writes (this process's `Node`, or the
/// holder's through its control socket).
fn dispatch(reader: &Node, device: &dyn Device, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Init => {
            println!("Peernotes data dir: {}", reader.data_dir().display());
            println!("Node id: {}", reader.node_id());
        }
        Command::Id => {
            println!("{}", reader.node_id());
        }
        Command::New { text, stdin, space } => {
            let space = space_or_private(device, space)?;
            let text = if stdin {
                read_stdin()?
            } else if !text.is_empty() {
                text.join(" ")
            } else {
                let written = editor::edit_text("", "new note")?;
                if written.trim().is_empty() {
                    eprintln!("peernotes: the note was empty; nothing created");
                    return Ok(exit_code::ERROR);
                }
                written
            };
            let id = device.create_in(space, &text)?;
            println!("{id}");
        }
        Command::List { trash, json } => {
            let filter = if trash {
                ListFilter::Trash
            } else {
                ListFilter::Active
            };
            let notes = reader.list(filter)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&notes)?);
            } else {
                output::print_list(&notes, trash);
            }
        }
        Command::Show { id, json } => {
            let id = reader.find(&id)?;
            let note = reader.get(&id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&note)?);
            } else {
                output::print_text(&note.text)?;
            }
        }
        Command::Edit { id, stdin } => {
            let id = device.find(&id)?;
            let (text, base) = device.checkout(&id)?;
            let edited = if stdin {
                read_stdin()?
            } else {
                editor::edit_text(&text, id.short())?
            };
            if device.replace_text_since(&id, &base, &edited)? {
                eprintln!("Saved {}", id.short());
            } else {
                eprintln!("No changes to {}", id.short());
            }
        }
        Command::Search { query, limit, json } => {
            let hits = reader.search(&query.join(" "), limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                output::print_hits(&hits);
            }
        }
        Command::Rm { ids } => {
            for typed in ids {
                let id = device.find(&typed)?;
                device.trash(&id)?;
                eprintln!(
                    "Moved {} to the trash (undo: peernotes restore {})",
                    id.short(),
                    id.short()
                );
            }
        }
        Command::Restore { ids } => {
            for typed in ids {
                let id = device.find(&typed)?;
                device.restore(&id)?;
                eprintln!("Restored {}", id.short());
            }
        }
        Command::Log { id, limit } => {
            let id = device.find(&id)?;
            output::print_history(&device.history(&id, limit)?);
        }
        Command::Import { dir, skip_invalid } => {
            if !dir.is_dir() {
                bail!("{} is not a folder", dir.display());
            }
            let report = device.import(&dir, skip_invalid)?;
            for (path, why) in &report.skipped {
                eprintln!("peernotes: skipped {}: {why}", path.display());
            }
            eprintln!(
                "Imported {} note(s) from {}",
                report.imported.len(),
                dir.display()
            );
        }
        Command::Export { dir, trash } => {
            let report = vault::export(reader, &dir, trash)?;
            eprintln!(
                "Exported {} note(s) to {}",
                report.files.len(),
                dir.display()
            );
        }
        Command::Space { command } => space_command(reader, device, command)?,
        Command::Status { json } => {
            let status = reader.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                output::print_holder(Client::connect(reader.data_dir()).ok().flatten().as_ref());
                output::print_status(&status);
            }
        }
        Command::Serve { .. }
        | Command::Invite { .. }
        | Command::Join { .. }
        | Command::Device {
            command: DeviceCommand::Link { .. },
        } => {
            unreachable!("networked commands are run before dispatch")
        }
        Command::Device { command } => device_command(reader, device, command)?,
        Command::Compact => {
            let (before, after) = device.compact()?;
            eprintln!("Store: {before} → {after} bytes");
        }
    }
    Ok(exit_code::OK)
}

fn device_command(
    reader: &Node,
    device: &dyn Device,
    command: DeviceCommand,
) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Link { .. } => unreachable!("networked commands are run before dispatch"),
        DeviceCommand::List { json } => {
            let devices = device.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                output::print_members(&devices, reader.node_id());
            }
        }
        DeviceCommand::Remove { node_id } => {
            let spaces = device.remove_device(&node_id)?;
            eprintln!(
                "Revoked in {} space(s): it receives nothing more, and what it writes from now on is refused",
                spaces.len()
            );
        }
    }
    Ok(())
}

fn space_command(reader: &Node, device: &dyn Device, command: SpaceCommand) -> anyhow::Result<()> {
    match command {
        SpaceCommand::Create { name } => {
            let id = device.create_space(&name.join(" "))?;
            println!("{id}");
        }
        SpaceCommand::List { json } => {
            let spaces = device.spaces()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&spaces)?);
            } else {
                output::print_spaces(&spaces);
            }
        }
        SpaceCommand::Members { space, json } => {
            let members = device.members(device.find_space(&space)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                output::print_members(&members, reader.node_id());
            }
        }
        SpaceCommand::AddMember {
            space,
            node_id,
            name,
            role,
        } => {
            let space = device.find_space(&space)?;
            device.add_member(space, &node_id, &name, role)?;
            eprintln!(
                "Added {} to the space as {role}",
                output::printable(&output::short(node_id.trim(), 8))
            );
        }
        SpaceCommand::Role {
            space,
            node_id,
            role,
        } => {
            let space = device.find_space(&space)?;
            device.set_role(space, &node_id, role)?;
            eprintln!(
                "{} is now {role}",
                output::printable(&output::short(node_id.trim(), 8))
            );
        }
        SpaceCommand::Leave { space } => {
            let space = device.find_space(&space)?;
            device.leave_space(space)?;
            eprintln!("Left the space: its members no longer sync it with this device");
        }
        SpaceCommand::Join { space_id, inviter } => {
            let space: SpaceId = space_id.trim().parse()?;
            device.join_space(space, inviter.trim())?;
            eprintln!(
                "Joined; the space arrives when this device next syncs with {}",
                inviter.trim()
            );
        }
        SpaceCommand::RemoveMember { space, node_id } => {
            let space = device.find_space(&space)?;
            device.remove_member(space, node_id.trim())?;
            eprintln!(
                "Removed {}: nothing more of this space will be synced with it",
                node_id.trim()
            );
        }
    }
    Ok(())
}

fn read_stdin() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprintln!("(reading the note from standard input; end with Ctrl-D)");
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Invalid(format!(
            "standard input is not UTF-8 text (invalid byte at offset {}); nothing was changed",
            e.utf8_error().valid_up_to()
        ))
        .into()
    })
}

//! Network settings: the address to listen on, mDNS on the LAN, and relays.
//!
//! They live in `config.toml` in the data dir, and each can be overridden by an
//! environment variable (`PEERNOTES_BIND`, `PEERNOTES_MDNS`, `PEERNOTES_RELAY`),
//! so a test can pin every process to loopback or to its own network namespace.
//! Defaults suit a laptop: every interface, mDNS on, relays off — so nothing
//! leaves the LAN unless the user opts in to a relay.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The settings file, in the data dir.
pub const CONFIG_FILE: &str = "config.toml";
/// Overrides `bind`: the address to listen on, e.g. `127.0.0.1:0`.
pub const BIND_ENV: &str = "PEERNOTES_BIND";
/// Overrides `mdns`: `on` or `off`.
pub const MDNS_ENV: &str = "PEERNOTES_MDNS";
/// Overrides `relay`: `off`, `public` or a relay URL.
pub const RELAY_ENV: &str = "PEERNOTES_RELAY";

/// Why a short code cannot be used here, when mDNS is not running.
pub const MDNS_OFF: &str = "short codes need mDNS on a LAN, and it is off here (mdns = false in \
     config.toml, PEERNOTES_MDNS=off, or a loopback address in bind/PEERNOTES_BIND): use a ticket instead";

/// What a new data dir's `config.toml` says: the defaults, explained.
pub const DEFAULT_CONFIG: &str = r#"# Peernotes network settings. Environment variables override each line:
# PEERNOTES_BIND, PEERNOTES_MDNS and PEERNOTES_RELAY.

# The address to listen on. Port 0 picks a free port at each start.
bind = "0.0.0.0:0"

# Find other members' devices on the local network with mDNS.
mdns = true

# Relays carry traffic between devices that cannot reach each other directly
# (different networks, strict NATs). "off" keeps every byte on the networks you
# are on; "public" uses iroh's public relays; a URL such as
# "https://relay.example.com" uses a relay you run yourself (`iroh-relay`).
relay = "off"
"#;

/// Which relay, if any, the endpoint keeps a connection to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayChoice {
    Off,
    /// iroh's public relays.
    Public,
    /// A relay at this URL, typically self-hosted.
    Custom(iroh::RelayUrl),
}

impl RelayChoice {
    pub fn parse(text: &str) -> anyhow::Result<RelayChoice> {
        match text.trim() {
            "" | "off" | "none" => Ok(RelayChoice::Off),
            "public" | "default" => Ok(RelayChoice::Public),
            url => {
                let parsed: iroh::RelayUrl = url.parse().with_context(|| {
                    format!("relay `{url}` is not \"off\", \"public\" or a URL like https://relay.example.com")
                })?;
                Ok(RelayChoice::Custom(parsed))
            }
        }
    }
}

/// Where and how the endpoint listens and finds peers.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bind: SocketAddr,
    pub mdns: bool,
    pub relay: RelayChoice,
}

/// `config.toml` as written by a person: every line optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    bind: Option<String>,
    mdns: Option<bool>,
    relay: Option<String>,
}

impl NetConfig {
    /// Loopback only, no mDNS, no relay: for tests and for trying things on one
    /// machine.
    pub fn loopback() -> NetConfig {
        NetConfig {
            bind: "127.0.0.1:0".parse().expect("a valid address"),
            mdns: false,
            relay: RelayChoice::Off,
        }
    }

    /// The defaults for a real device.
    pub fn defaults() -> NetConfig {
        NetConfig {
            bind: "0.0.0.0:0".parse().expect("a valid address"),
            mdns: true,
            relay: RelayChoice::Off,
        }
    }

    /// The data dir's `config.toml` (if any) with the environment's overrides.
    pub fn load(data_dir: &Path) -> anyhow::Result<NetConfig> {
        let path = data_dir.join(CONFIG_FILE);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<ConfigFile>(&text)
                .with_context(|| format!("{} is not valid", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = NetConfig::defaults();
        if let Some(bind) = file.bind {
            config.bind = parse_bind(&bind).with_context(|| format!("in {}", path.display()))?;
        }
        if let Some(mdns) = file.mdns {
            config.mdns = mdns;
        }
        if let Some(relay) = file.relay {
            config.relay =
                RelayChoice::parse(&relay).with_context(|| format!("in {}", path.display()))?;
        }
        if let Some(bind) = env(BIND_ENV) {
            config.bind = parse_bind(&bind).with_context(|| format!("in {BIND_ENV}"))?;
        }
        if let Some(mdns) = env(MDNS_ENV) {
            config.mdns = parse_switch(&mdns).with_context(|| format!("in {MDNS_ENV}"))?;
        }
        if let Some(relay) = env(RELAY_ENV) {
            config.relay = RelayChoice::parse(&relay).with_context(|| format!("in {RELAY_ENV}"))?;
        }
        Ok(config)
    }

    /// Whether mDNS runs: asked for, and listening beyond this machine (a
    /// loopback endpoint has nothing to announce on the LAN).
    pub fn mdns_active(&self) -> bool {
        self.mdns && !self.bind.ip().is_loopback()
    }
}

/// Writes the commented default `config.toml` into a data dir that has none.
pub fn write_default(data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join(CONFIG_FILE);
    if path.exists() {
        return Ok(());
    }
    std::fs::write(&path, DEFAULT_CONFIG)
}

fn parse_bind(text: &str) -> anyhow::Result<SocketAddr> {
    text.trim()
        .parse()
        .with_context(|| format!("`{text}` is not an address like 127.0.0.1:0"))
}

fn parse_switch(text: &str) -> anyhow::Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        other => anyhow::bail!("`{other}` is not on or off"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_says_what_the_defaults_are() {
        let file: ConfigFile = toml::from_str(DEFAULT_CONFIG).unwrap();
        let defaults = NetConfig::defaults();
        assert_eq!(parse_bind(&file.bind.unwrap()).unwrap(), defaults.bind);
        assert_eq!(file.mdns, Some(defaults.mdns));
        assert_eq!(
            RelayChoice::parse(&file.relay.unwrap()).unwrap(),
            defaults.relay
        );
    }

    #[test]
    fn relay_choices_parse_and_nonsense_is_refused() {
        assert_eq!(RelayChoice::parse("off").unwrap(), RelayChoice::Off);
        assert_eq!(RelayChoice::parse("public").unwrap(), RelayChoice::Public);
        match RelayChoice::parse("http://127.0.0.1:3340").unwrap() {
            RelayChoice::Custom(url) => assert_eq!(url.to_string(), "http://127.0.0.1:3340/"),
            other => panic!("expected a custom relay, got {other:?}"),
        }
        let err = RelayChoice::parse("relay please").unwrap_err();
        assert!(format!("{err:#}").contains("not \"off\""), "{err:#}");
    }

    #[test]
    fn a_misspelt_setting_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "mnds = false\n").unwrap();
        let err = NetConfig::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
    }

    #[test]
    fn mdns_never_runs_on_a_loopback_endpoint() {
        let mut config = NetConfig::loopback();
        config.mdns = true;
        assert!(!config.mdns_active());
        assert!(NetConfig::defaults().mdns_active());
    }
}

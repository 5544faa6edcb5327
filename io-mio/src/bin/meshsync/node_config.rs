//! What `meshsync node` runs with: its flags, an optional TOML file with the
//! same keys (`--config FILE`), and the effective configuration made of both
//! (`--print-config` prints it).
//!
//! # Design
//! Every flag of `meshsync node` but `--config` and `--print-config` is also
//! a key of the file, spelt as the flag without its dashes (kebab-case:
//! `body-bytes`, `proposer-key`, `store-failing-exit-secs`); a repeatable
//! flag is an array. The file is read first, then every flag given on the
//! command line replaces its key's value (a repeatable flag replaces the
//! whole array). Values are checked as the flags are, and an unknown key or
//! a value that does not fit is refused in one line that names the file and
//! the key.
//!
//! Relative paths in a file are relative to the file's directory (so a file
//! means the same from any working directory), relative paths given as
//! flags to the working directory; the effective configuration names every
//! path absolute. [`NodeConfig::to_toml`] writes every key that has a
//! value, and names the unset ones in comments, so its output given back
//! with `--config` is the same configuration, from any directory.
//!
//! `docs/node.example.toml` shows every key with its meaning and default; a
//! test below fails when a flag has no key there.
//!
//! Discovery is on unless `--no-discovery`, when the node has an address
//! to advertise: `--advertise`, or else the listen address if peers can
//! dial it. [`NodeConfig::discovery`] decides, and says in one warning why
//! it is off when the operator did not ask for that.
//!
//! # Limits
//! At most [`STATIC_PEERS_MAX`] static peers (the core's own cap), each
//! address once, and none also given as a one-shot `--peer`; at most
//! [`BOOTNODES_MAX`] bootnodes and [`ADDRESSES_PER_RECORD_MAX`] advertised
//! addresses (the core's caps), each once, and each one discovery would
//! accept (no private address without `--allow-private`): a list that
//! breaks one of these is refused before the node starts, naming the flag
//! or the key, rather than cut short, merged or ignored quietly.

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use meshsync_core::chain::block::BLOCK_BODY_BYTES_MAX;
use meshsync_core::chain::DEVNET_BODY_BYTES_DEFAULT;
use meshsync_core::discovery::address::{check_address, AddressRefusal};
use meshsync_core::discovery::limits::{ADDRESSES_PER_RECORD_MAX, BOOTNODES_MAX};
use meshsync_core::limits::{PEERS_MAX, PEER_SILENCE_TIMEOUT};
use meshsync_core::node::DiscoveryConfig;
use meshsync_core::peer::{PEERS_TARGET, STATIC_PEERS_MAX};
use meshsync_mio::driver::{
    ClockPolicy, RecordOptions, RECORD_BYTES_MAX_DEFAULT, RECORD_BYTES_MAX_MIN,
    STORE_FAILING_EXIT_AFTER_DEFAULT,
};
use meshsync_mio::workers::WORKER_THREADS_MAX;
use meshsync_mio::{BootnodeAddress, PeerAddress, StaticPeerAddress};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The keys of a configuration file, in the order `--print-config` writes
/// them: the long names of `meshsync node`'s flags but those of
/// [`COMMAND_LINE_ONLY`].
pub const KEYS: [&str; 23] = [
    "listen",
    "key",
    "peer",
    "static-peer",
    "bootnode",
    "advertise",
    "allow-private",
    "target-peers",
    "max-peers",
    "peer-silence-secs",
    "no-discovery",
    "network",
    "genesis",
    "proposer-key",
    "data-dir",
    "body-bytes",
    "workers",
    "repair",
    "store-failing-exit-secs",
    "clock-jump",
    "metrics",
    "status-interval-secs",
    "log-format",
];

/// How often the status line is logged when `--status-interval-secs` is not given.
pub const STATUS_INTERVAL_SECS_DEFAULT: u64 = 30;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// env_logger's usual lines.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message.
    Json,
}

impl LogFormat {
    /// The flag's and the key's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Flags that are never keys: the two about the file itself,
/// `--accept-fresh-watermark`, an acknowledgement for one start that a file
/// would repeat at every start after it, and `--record` with its bound: a
/// recording holds the secret key and every byte received, something to
/// ask for on one run, not to leave in a file for every start.
pub const COMMAND_LINE_ONLY: [&str; 5] = [
    "config",
    "print-config",
    "accept-fresh-watermark",
    "record",
    "record-bytes-max",
];

/// The flags of `meshsync node`. Each but `--config` and `--print-config`
/// may come from the file instead; a flag given here wins over the file.
#[derive(Args, Debug, Default)]
pub struct NodeFlags {
    /// A TOML file of options: every flag below is a key (kebab-case, e.g.
    /// `body-bytes = 2048`); flags given here override it. See
    /// docs/node.example.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (the file, then the flags) as TOML
    /// and exit; given back with --config it is the same configuration.
    #[arg(long = "print-config")]
    pub print_config: bool,
    /// Address to listen on, e.g. 0.0.0.0:9000 (required, here or in the file).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The node's key file (from `meshsync keygen`; required, here or in the file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A peer to dial once at start, optionally with the identity it must
    /// prove; it is not redialled if the dial fails or the connection drops
    /// (see --static-peer). Repeatable; given here, replaces the file's list.
    #[arg(long = "peer", value_name = "ADDR[@PEERID]")]
    pub peers: Vec<PeerAddress>,
    /// A peer to keep connected: dialled at start and redialled with backoff
    /// (1 s doubling to 5 min) whenever the dial fails or the connection
    /// drops. PEERID is required: the id `meshsync keygen` printed, or the
    /// one in the peer's `node PEERID listening on ADDR` log line.
    /// Repeatable, each address once, not also a --peer; given here,
    /// replaces the file's list.
    #[arg(long = "static-peer", value_name = "ADDR@PEERID")]
    pub static_peers: Vec<StaticPeerAddress>,
    /// A node to start discovery from: dialled at start, asked for the
    /// peers it knows, and tried again whenever this node knows nobody; it
    /// is not kept connected (see --static-peer). PEERID is required.
    /// Repeatable, at most 16, each address once; given here, replaces the
    /// file's list.
    #[arg(long = "bootnode", value_name = "ADDR@PEERID")]
    pub bootnodes: Vec<BootnodeAddress>,
    /// An IP:PORT peers can dial this node at, signed into its discovery
    /// record and handed to other nodes. Repeatable, at most 4, each once.
    /// Default: the --listen address, unless it is 0.0.0.0 or :: (then
    /// the node learns its address from what peers see once three peers
    /// in distinct networks agree) or private without --allow-private
    /// (then discovery is off); given here, replaces the file's list and
    /// nothing is learned.
    #[arg(long = "advertise", value_name = "ADDR")]
    pub advertise: Vec<SocketAddr>,
    /// Let discovery use loopback, private and link-local addresses
    /// (127.0.0.0/8, 10.0.0.0/8, 192.168.0.0/16, fc00::/7, ...) in
    /// --advertise, --bootnode and peers' records: for a network on one
    /// host or a private network. `--allow-private=false` turns off a
    /// file's `allow-private = true`.
    #[arg(
        long = "allow-private",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub allow_private: Option<bool>,
    /// Connected peers to aim for: while it has fewer, the node dials the
    /// peers discovery finds (1 to 50) [default: 25].
    #[arg(long = "target-peers", value_name = "N", value_parser = parse_target_peers)]
    pub target_peers: Option<usize>,
    /// The most connected peers: a full node refuses newcomers or makes room
    /// by evicting a peer; inbound peers get 60 % of it (1 to 50, at least
    /// --target-peers) [default: 50].
    #[arg(long = "max-peers", value_name = "N", value_parser = parse_target_peers)]
    pub max_peers: Option<usize>,
    /// Drop a peer nothing has come from for S seconds (a frozen or
    /// partitioned peer), and ping each peer at least every S/3 s so an
    /// idle honest one is not; 20 to 3600 [default: 90].
    #[arg(long = "peer-silence-secs", value_name = "S", value_parser = parse_peer_silence_secs)]
    pub peer_silence_secs: Option<u64>,
    /// Run without discovery: no record, no lookups, no bootnodes; the
    /// node meets only --peer, --static-peer and who dials it.
    /// `--no-discovery=false` turns off a file's `no-discovery = true`.
    #[arg(
        long = "no-discovery",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub no_discovery: Option<bool>,
    /// Network id; peers on another network are refused (default: the
    /// genesis file's, or 1).
    #[arg(long = "network", value_name = "ID")]
    pub network_id: Option<u64>,
    /// The network's genesis file (from `meshsync genesis`); default: the
    /// devnet genesis of the network id (genesis time 0, one proposer).
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// A proposer key file (from `meshsync genesis`) to produce blocks
    /// with; it must be a genesis proposer. Repeatable; given here, replaces
    /// the file's list.
    #[arg(long = "proposer-key", value_name = "FILE")]
    pub proposer_keys: Vec<PathBuf>,
    /// Directory of the durable block store (created if missing);
    /// without it the node keeps its chain in memory only.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Body bytes of the blocks this node produces [default: 1024].
    #[arg(long = "body-bytes", value_name = "N", value_parser = parse_body_bytes)]
    pub body_bytes: Option<usize>,
    /// Worker threads for block verification (default: one per core).
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// If the block store is damaged or half-created, move it aside,
    /// keep what can still be read of it, and re-sync the rest from peers.
    /// `--repair=false` turns off a file's `repair = true`.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub repair: Option<bool>,
    /// Stop with an error once the block store has refused writes this long
    /// [default: 300].
    #[arg(long = "store-failing-exit-secs", value_name = "S")]
    pub store_failing_exit_secs: Option<u64>,
    /// When the wall clock jumps: `rebase` the slot clock on it, or
    /// `refuse` to produce until it is back [default: rebase].
    #[arg(long = "clock-jump", value_name = "POLICY", value_parser = parse_clock_policy)]
    pub clock_jump: Option<ClockPolicy>,
    /// Start a --proposer-key although the data directory has no signing
    /// watermark for it while it holds blocks that key signed: only if the
    /// key signed nothing elsewhere beyond what is stored here. Command line
    /// only: a file would give it at every start.
    #[arg(long = "accept-fresh-watermark")]
    pub accept_fresh_watermark: bool,
    /// Serve Prometheus metrics (OpenMetrics text) on http://ADDR/metrics,
    /// e.g. 127.0.0.1:9100; port 0 picks a free port, named in the log.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Log a status line (peers, head and finalized slots, sync) every S
    /// seconds; 0 turns it off [default: 30].
    #[arg(long = "status-interval-secs", value_name = "S")]
    pub status_interval_secs: Option<u64>,
    /// Log lines as `text` or as one JSON object per line (`json`) [default: text].
    #[arg(long = "log-format", value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Record every input the node's core is handed, with the node's seed,
    /// identity and configuration, to FILE (mode 0600: it holds the secret
    /// key), for `meshsync-sim replay FILE`. An existing FILE is moved to
    /// FILE.1 first. Command line only.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Stop recording (with an end marker and a WARN) before the file passes
    /// N bytes; the node runs on [default: 1073741824]. Command line only.
    #[arg(long = "record-bytes-max", value_name = "N", requires = "record", value_parser = parse_record_bytes_max)]
    pub record_bytes_max: Option<u64>,
}

/// The configuration a node runs with: the file's keys, then the flags,
/// then the defaults. Every path is absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub key: PathBuf,
    pub peers: Vec<PeerAddress>,
    /// Checked: at most [`STATIC_PEERS_MAX`], each address once, none in `peers`.
    pub static_peers: Vec<StaticPeerAddress>,
    /// Checked: at most [`BOOTNODES_MAX`], each address once, each one
    /// discovery accepts under `allow_private`.
    pub bootnodes: Vec<BootnodeAddress>,
    /// Checked as `bootnodes`, at most [`ADDRESSES_PER_RECORD_MAX`]; empty:
    /// the listen address, if discovery accepts it.
    pub advertise: Vec<SocketAddr>,
    pub allow_private: bool,
    /// 1 to [`PEERS_MAX`].
    pub target_peers: usize,
    /// `target_peers` to [`PEERS_MAX`].
    pub max_peers: usize,
    /// [`PEER_SILENCE_SECS_MIN`] to [`PEER_SILENCE_SECS_MAX`].
    pub peer_silence_secs: u64,
    pub no_discovery: bool,
    pub network_id: Option<u64>,
    pub genesis: Option<PathBuf>,
    pub proposer_keys: Vec<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub body_bytes: usize,
    pub workers: Option<usize>,
    pub repair: bool,
    pub store_failing_exit_secs: u64,
    pub clock_jump: ClockPolicy,
    /// Given on this command line only; never printed as a key.
    pub accept_fresh_watermark: bool,
    pub metrics: Option<SocketAddr>,
    /// 0: no status line.
    pub status_interval_secs: u64,
    pub log_format: LogFormat,
    /// Given on this command line only; never printed as a key.
    pub record: Option<RecordOptions>,
}

/// What a configuration file set: each key, if present, already checked.
#[derive(Debug, Default)]
struct FileValues {
    listen: Option<SocketAddr>,
    key: Option<PathBuf>,
    peers: Option<Vec<PeerAddress>>,
    static_peers: Option<Vec<StaticPeerAddress>>,
    bootnodes: Option<Vec<BootnodeAddress>>,
    advertise: Option<Vec<SocketAddr>>,
    allow_private: Option<bool>,
    target_peers: Option<usize>,
    max_peers: Option<usize>,
    peer_silence_secs: Option<u64>,
    no_discovery: Option<bool>,
    network_id: Option<u64>,
    genesis: Option<PathBuf>,
    proposer_keys: Option<Vec<PathBuf>>,
    data_dir: Option<PathBuf>,
    body_bytes: Option<usize>,
    workers: Option<usize>,
    repair: Option<bool>,
    store_failing_exit_secs: Option<u64>,
    clock_jump: Option<ClockPolicy>,
    metrics: Option<SocketAddr>,
    status_interval_secs: Option<u64>,
    log_format: Option<LogFormat>,
}

impl NodeFlags {
    /// The effective configuration: the file named by `--config` (if any),
    /// overridden by the flags given, then the defaults. Errors are one
    /// line, naming the file and the key when they are the file's.
    pub fn resolve(self) -> Result<NodeConfig, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileValues::default(),
        };
        let missing = |flag: &str, value_name: &str| match &self.config {
            Some(path) => format!(
                "no `{flag}`: give --{flag} {value_name}, or set `{flag}` in {}",
                path.display()
            ),
            None => {
                format!("no `{flag}`: give --{flag} {value_name}, or a --config file that sets it")
            }
        };
        let listen = self
            .listen
            .or(file.listen)
            .ok_or_else(|| missing("listen", "ADDR"))?;
        let key = match self.key {
            Some(path) => flag_path("key", &path)?,
            None => file.key.ok_or_else(|| missing("key", "FILE"))?,
        };
        let proposer_keys = if self.proposer_keys.is_empty() {
            file.proposer_keys.unwrap_or_default()
        } else {
            self.proposer_keys
                .iter()
                .map(|path| flag_path("proposer-key", path))
                .collect::<Result<_, _>>()?
        };
        // Both lists from the file: its error names the file, as the keys' do.
        let lists_from_file = match &self.config {
            Some(path) if self.peers.is_empty() && self.static_peers.is_empty() => {
                format!("config {}: ", path.display())
            }
            _ => String::new(),
        };
        let peers = if self.peers.is_empty() {
            file.peers.unwrap_or_default()
        } else {
            self.peers
        };
        let static_peers = if self.static_peers.is_empty() {
            file.static_peers.unwrap_or_default()
        } else {
            check_static_peers(&self.static_peers)
                .map_err(|why| format!("--static-peer: {why}"))?;
            self.static_peers
        };
        check_not_both(&peers, &static_peers).map_err(|why| format!("{lists_from_file}{why}"))?;
        // Whether an address is acceptable depends on `allow-private`, which
        // may come from elsewhere than the list: the error names the list's
        // flag, or its key and the file.
        let allow_private = self.allow_private.or(file.allow_private).unwrap_or(false);
        let in_file = |key: &str| match &self.config {
            Some(path) => format!("config {}: key `{key}`", path.display()),
            None => format!("key `{key}`"),
        };
        let bootnodes = if self.bootnodes.is_empty() {
            let bootnodes = file.bootnodes.unwrap_or_default();
            check_dialable(
                bootnodes.iter().map(|b| (b.to_string(), b.addr)),
                allow_private,
            )
            .map_err(|why| format!("{}: {why}", in_file("bootnode")))?;
            bootnodes
        } else {
            check_bootnodes(&self.bootnodes).map_err(|why| format!("--bootnode: {why}"))?;
            check_dialable(
                self.bootnodes.iter().map(|b| (b.to_string(), b.addr)),
                allow_private,
            )
            .map_err(|why| format!("--bootnode {why}"))?;
            self.bootnodes
        };
        let advertise = if self.advertise.is_empty() {
            let advertise = file.advertise.unwrap_or_default();
            check_dialable(advertise.iter().map(|a| (a.to_string(), *a)), allow_private)
                .map_err(|why| format!("{}: {why}", in_file("advertise")))?;
            advertise
        } else {
            check_advertise(&self.advertise).map_err(|why| format!("--advertise: {why}"))?;
            check_dialable(
                self.advertise.iter().map(|a| (a.to_string(), *a)),
                allow_private,
            )
            .map_err(|why| format!("--advertise {why}"))?;
            self.advertise
        };
        let target_peers = self
            .target_peers
            .or(file.target_peers)
            .unwrap_or(PEERS_TARGET);
        let max_peers = self.max_peers.or(file.max_peers).unwrap_or(PEERS_MAX);
        if target_peers > max_peers {
            // Each side named as the operator set it: a flag, a key, or not at all.
            let name = |flag: Option<usize>, from_file: Option<usize>, key: &str| match (
                flag, from_file,
            ) {
                (Some(_), _) => format!("--{key}"),
                (None, Some(_)) => in_file(key),
                (None, None) => format!("--{key} (default)"),
            };
            return Err(format!(
                "{} {max_peers}: below {} {target_peers} (a node cannot aim for more peers \
                 than it keeps)",
                name(self.max_peers, file.max_peers, "max-peers"),
                name(self.target_peers, file.target_peers, "target-peers"),
            ));
        }
        Ok(NodeConfig {
            listen,
            key,
            peers,
            static_peers,
            bootnodes,
            advertise,
            allow_private,
            target_peers,
            max_peers,
            peer_silence_secs: self
                .peer_silence_secs
                .or(file.peer_silence_secs)
                .unwrap_or(PEER_SILENCE_TIMEOUT.as_secs()),
            no_discovery: self.no_discovery.or(file.no_discovery).unwrap_or(false),
            network_id: self.network_id.or(file.network_id),
            genesis: match self.genesis {
                Some(path) => Some(flag_path("genesis", &path)?),
                None => file.genesis,
            },
            proposer_keys,
            data_dir: match self.data_dir {
                Some(path) => Some(flag_path("data-dir", &path)?),
                None => file.data_dir,
            },
            body_bytes: self
                .body_bytes
                .or(file.body_bytes)
                .unwrap_or(DEVNET_BODY_BYTES_DEFAULT),
            workers: self.workers.or(file.workers),
            repair: self.repair.or(file.repair).unwrap_or(false),
            store_failing_exit_secs: self
                .store_failing_exit_secs
                .or(file.store_failing_exit_secs)
                .unwrap_or(STORE_FAILING_EXIT_AFTER_DEFAULT.as_secs()),
            clock_jump: self
                .clock_jump
                .or(file.clock_jump)
                .unwrap_or(ClockPolicy::Rebase),
            accept_fresh_watermark: self.accept_fresh_watermark,
            metrics: self.metrics.or(file.metrics),
            status_interval_secs: self
                .status_interval_secs
                .or(file.status_interval_secs)
                .unwrap_or(STATUS_INTERVAL_SECS_DEFAULT),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            record: match self.record {
                Some(path) => Some(RecordOptions {
                    bytes_max: self.record_bytes_max.unwrap_or(RECORD_BYTES_MAX_DEFAULT),
                    ..RecordOptions::new(flag_path("record", &path)?)
                }),
                None => None,
            },
        })
    }
}

/// The configuration as `--print-config` writes it: field names are the keys.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Printed<'a> {
    listen: String,
    key: &'a str,
    peer: Vec<String>,
    static_peer: Vec<String>,
    bootnode: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    advertise: Vec<String>,
    allow_private: bool,
    target_peers: i64,
    max_peers: i64,
    peer_silence_secs: i64,
    no_discovery: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    genesis: Option<&'a str>,
    proposer_key: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<&'a str>,
    body_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<i64>,
    repair: bool,
    store_failing_exit_secs: i64,
    clock_jump: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<String>,
    status_interval_secs: i64,
    log_format: &'static str,
}

impl NodeConfig {
    /// The configuration as a TOML file: every key that has a value, and a
    /// comment for each unset one saying what its absence means.
    pub fn to_toml(&self) -> Result<String, String> {
        let path = |key: &str, path: &'_ Path| -> Result<String, String> {
            path.to_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "`{key}` {} is not UTF-8, which TOML cannot hold",
                    path.display()
                )
            })
        };
        let key = path("key", &self.key)?;
        let genesis = self
            .genesis
            .as_deref()
            .map(|genesis| path("genesis", genesis))
            .transpose()?;
        let proposer_keys = self
            .proposer_keys
            .iter()
            .map(|key| path("proposer-key", key))
            .collect::<Result<Vec<_>, _>>()?;
        let data_dir = self
            .data_dir
            .as_deref()
            .map(|dir| path("data-dir", dir))
            .transpose()?;
        let printed = Printed {
            listen: self.listen.to_string(),
            key: &key,
            peer: self.peers.iter().map(PeerAddress::to_string).collect(),
            static_peer: self
                .static_peers
                .iter()
                .map(StaticPeerAddress::to_string)
                .collect(),
            bootnode: self
                .bootnodes
                .iter()
                .map(BootnodeAddress::to_string)
                .collect(),
            advertise: self.advertise.iter().map(SocketAddr::to_string).collect(),
            allow_private: self.allow_private,
            target_peers: toml_integer("target-peers", self.target_peers)?,
            max_peers: toml_integer("max-peers", self.max_peers)?,
            peer_silence_secs: toml_integer("peer-silence-secs", self.peer_silence_secs)?,
            no_discovery: self.no_discovery,
            network: self
                .network_id
                .map(|id| toml_integer("network", id))
                .transpose()?,
            genesis: genesis.as_deref(),
            proposer_key: proposer_keys.iter().map(String::as_str).collect(),
            data_dir: data_dir.as_deref(),
            body_bytes: toml_integer("body-bytes", self.body_bytes)?,
            workers: self
                .workers
                .map(|workers| toml_integer("workers", workers))
                .transpose()?,
            repair: self.repair,
            store_failing_exit_secs: toml_integer(
                "store-failing-exit-secs",
                self.store_failing_exit_secs,
            )?,
            clock_jump: match self.clock_jump {
                ClockPolicy::Rebase => "rebase",
                ClockPolicy::Refuse => "refuse",
            },
            metrics: self.metrics.map(|addr| addr.to_string()),
            status_interval_secs: toml_integer("status-interval-secs", self.status_interval_secs)?,
            log_format: self.log_format.as_str(),
        };
        let body = toml::to_string(&printed)
            .map_err(|error| format!("cannot write the configuration as TOML: {error}"))?;
        let mut text = String::from(
            "# The effective configuration of `meshsync node` (the file, then the flags).\n",
        );
        text.push_str(&body);
        let unset = [
            (
                self.advertise.is_empty(),
                "advertise",
                "the listen address, if discovery accepts it",
            ),
            (
                self.network_id.is_none(),
                "network",
                "the genesis file's id, or 1",
            ),
            (
                self.genesis.is_none(),
                "genesis",
                "the devnet genesis of the network id",
            ),
            (self.data_dir.is_none(), "data-dir", "memory only"),
            (self.workers.is_none(), "workers", "one per core"),
            (self.metrics.is_none(), "metrics", "no metrics served"),
        ];
        for (is_unset, key, meaning) in unset {
            if is_unset {
                text.push_str(&format!("# {key} is unset: {meaning}\n"));
            }
        }
        Ok(text)
    }
}

/// Whether a node runs discovery, as [`NodeConfig::discovery`] decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryPlan {
    /// On, with this configuration.
    On(DiscoveryConfig),
    /// Off; the warning to log when the operator did not ask for it, or
    /// asked for it while giving what only discovery uses.
    Off { warning: Option<String> },
}

impl NodeConfig {
    /// Whether and how the node runs discovery, its record numbered
    /// `record_seq` (the caller's wall clock: the core reads none). The
    /// addresses are `advertise`, or else the listen address when
    /// discovery accepts it; a listen address with port 0 keeps it, and
    /// the driver puts the bound port in its place. An unspecified listen
    /// address (`0.0.0.0`, `::`) without `advertise` starts with no
    /// address and learns one from what its peers see, at the listen port.
    pub fn discovery(&self, record_seq: u64) -> DiscoveryPlan {
        if self.no_discovery {
            let warning = (!self.bootnodes.is_empty()).then(|| {
                format!(
                    "discovery is off (--no-discovery): the {} bootnodes given are not dialled",
                    self.bootnodes.len()
                )
            });
            return DiscoveryPlan::Off { warning };
        }
        let mut learn_address_port = None;
        let addresses = if !self.advertise.is_empty() {
            self.advertise.clone()
        } else if self.listen.ip().is_unspecified() {
            // Every interface: which of them peers reach, they tell us.
            learn_address_port = Some(self.listen.port());
            Vec::new()
        } else {
            // Port 0 is the driver's to fill: judge the IP alone.
            let mut judged = self.listen;
            if judged.port() == 0 {
                judged.set_port(1);
            }
            let why = match check_address(&judged, self.allow_private) {
                Ok(()) => None,
                Err(AddressRefusal::Private) => Some(format!(
                    "the listen address {} is loopback or private, which peers elsewhere \
                     cannot dial: pass --advertise ADDR with an address they can, or \
                     --allow-private on a network on one host or a private one",
                    self.listen
                )),
                Err(_) => Some(format!(
                    "listening on {}, which is no address a peer can dial: pass --advertise \
                     ADDR, the address peers reach this node at",
                    self.listen
                )),
            };
            if let Some(why) = why {
                return DiscoveryPlan::Off {
                    warning: Some(format!(
                        "discovery off: {why} (--no-discovery turns it off without this warning)"
                    )),
                };
            }
            vec![self.listen]
        };
        DiscoveryPlan::On(DiscoveryConfig {
            addresses,
            allow_private: self.allow_private,
            subnet_limits: true,
            bootnodes: self
                .bootnodes
                .iter()
                .map(BootnodeAddress::as_pair)
                .collect(),
            peers_target: self.target_peers,
            record_seq,
            learn_address_port,
        })
    }
}

/// `value` as a TOML integer, which is an `i64`.
fn toml_integer<T: TryInto<i64> + Copy + std::fmt::Display>(
    key: &str,
    value: T,
) -> Result<i64, String> {
    value.try_into().map_err(|_| {
        format!(
            "`{key}` {value} is beyond TOML's integers (at most {})",
            i64::MAX
        )
    })
}

/// Reads and checks a configuration file: one line of error, naming the file.
fn read_file(path: &Path) -> Result<FileValues, String> {
    let shown = path.display();
    let text = fs::read_to_string(path)
        .map_err(|error| format!("config {shown}: cannot read it: {error}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = error.message().trim().replace('\n', " ");
        match line {
            Some(line) => format!("config {shown}: line {line}: not TOML: {message}"),
            None => format!("config {shown}: not TOML: {message}"),
        }
    })?;
    // Relative paths in the file are the file's directory's.
    let directory = std::path::absolute(path)
        .map_err(|error| format!("config {shown}: cannot resolve its directory: {error}"))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut values = FileValues::default();
    for (key, value) in table {
        let error = |why: String| format!("config {shown}: key `{key}`: {why}");
        let file_path = |value: toml::Value| -> Result<PathBuf, String> {
            let text: String = typed(value).map_err(&error)?;
            if text.is_empty() {
                return Err(error("an empty path".to_owned()));
            }
            Ok(directory.join(text))
        };
        match key.as_str() {
            "listen" => values.listen = Some(parsed(value, str::parse).map_err(&error)?),
            "key" => values.key = Some(file_path(value)?),
            "peer" => {
                let texts: Vec<String> = typed(value).map_err(&error)?;
                let peers = texts
                    .iter()
                    .map(|text| text.parse::<PeerAddress>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(&error)?;
                values.peers = Some(peers);
            }
            "static-peer" => {
                let texts: Vec<String> = typed(value).map_err(&error)?;
                let peers: Vec<StaticPeerAddress> = texts
                    .iter()
                    .map(|text| text.parse::<StaticPeerAddress>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(&error)?;
                check_static_peers(&peers).map_err(&error)?;
                values.static_peers = Some(peers);
            }
            "bootnode" => {
                let texts: Vec<String> = typed(value).map_err(&error)?;
                let bootnodes: Vec<BootnodeAddress> = texts
                    .iter()
                    .map(|text| text.parse::<BootnodeAddress>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(&error)?;
                check_bootnodes(&bootnodes).map_err(&error)?;
                values.bootnodes = Some(bootnodes);
            }
            "advertise" => {
                let texts: Vec<String> = typed(value).map_err(&error)?;
                let addresses: Vec<SocketAddr> = texts
                    .iter()
                    .map(|text| text.parse().map_err(|e| format!("{text:?}: {e}")))
                    .collect::<Result<_, _>>()
                    .map_err(&error)?;
                check_advertise(&addresses).map_err(&error)?;
                values.advertise = Some(addresses);
            }
            "allow-private" => values.allow_private = Some(typed(value).map_err(&error)?),
            "target-peers" => {
                let peers: usize = typed(value).map_err(&error)?;
                values.target_peers = Some(check_target_peers(peers).map_err(&error)?);
            }
            "max-peers" => {
                let peers: usize = typed(value).map_err(&error)?;
                values.max_peers = Some(check_target_peers(peers).map_err(&error)?);
            }
            "peer-silence-secs" => {
                let secs: u64 = typed(value).map_err(&error)?;
                values.peer_silence_secs = Some(check_peer_silence_secs(secs).map_err(&error)?);
            }
            "no-discovery" => values.no_discovery = Some(typed(value).map_err(&error)?),
            "network" => values.network_id = Some(typed(value).map_err(&error)?),
            "genesis" => values.genesis = Some(file_path(value)?),
            "proposer-key" => {
                let texts: Vec<toml::Value> = typed(value).map_err(&error)?;
                values.proposer_keys =
                    Some(texts.into_iter().map(file_path).collect::<Result<_, _>>()?);
            }
            "data-dir" => values.data_dir = Some(file_path(value)?),
            "body-bytes" => {
                let bytes: usize = typed(value).map_err(&error)?;
                values.body_bytes = Some(check_body_bytes(bytes).map_err(&error)?);
            }
            "workers" => {
                let workers: usize = typed(value).map_err(&error)?;
                values.workers = Some(check_workers(workers).map_err(&error)?);
            }
            "repair" => values.repair = Some(typed(value).map_err(&error)?),
            "store-failing-exit-secs" => {
                values.store_failing_exit_secs = Some(typed(value).map_err(&error)?)
            }
            "clock-jump" => {
                values.clock_jump = Some(parsed(value, parse_clock_policy).map_err(&error)?)
            }
            "metrics" => values.metrics = Some(parsed(value, str::parse).map_err(&error)?),
            "status-interval-secs" => {
                values.status_interval_secs = Some(typed(value).map_err(&error)?)
            }
            "log-format" => {
                values.log_format = Some(parsed(value, parse_log_format).map_err(&error)?)
            }
            _ => return Err(unknown_key(path, &key)),
        }
    }
    Ok(values)
}

/// The error for a key no flag has, with the nearest spelling if it is only
/// written in snake_case.
fn unknown_key(path: &Path, key: &str) -> String {
    let kebab = key.replace('_', "-");
    if COMMAND_LINE_ONLY.contains(&kebab.as_str()) {
        return format!(
            "config {}: `{key}` is not a key: give --{kebab} on the command line",
            path.display()
        );
    }
    let hint = if kebab != key && KEYS.contains(&kebab.as_str()) {
        format!("; keys are spelt like the flags: `{kebab}`")
    } else {
        format!("; the keys are {}", KEYS.join(", "))
    };
    format!(
        "config {}: unknown key `{key}` (no `meshsync node` flag has that name{hint})",
        path.display()
    )
}

/// `value` as a `T`, with serde's one-line account of a mismatch.
fn typed<T: DeserializeOwned>(value: toml::Value) -> Result<T, String> {
    value
        .try_into()
        .map_err(|error: toml::de::Error| error.message().trim().replace('\n', " "))
}

/// A string `value` parsed by `parse`, as its flag would be.
fn parsed<T, E: std::fmt::Display>(
    value: toml::Value,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, String> {
    let text: String = typed(value)?;
    parse(&text).map_err(|error| format!("{text:?}: {error}"))
}

/// A path given as a flag, made absolute against the working directory.
fn flag_path(flag: &str, path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|error| format!("--{flag} {}: {error}", path.display()))
}

/// A list of static peers the core can keep: at most [`STATIC_PEERS_MAX`]
/// (the core would refuse the rest), and each address once (the core keeps
/// one entry per address, so a second would quietly replace the first's id).
fn check_static_peers(peers: &[StaticPeerAddress]) -> Result<(), String> {
    if peers.len() > STATIC_PEERS_MAX {
        return Err(format!(
            "{} static peers given, at most {STATIC_PEERS_MAX} are kept",
            peers.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for peer in peers {
        if !seen.insert(peer.addr) {
            return Err(format!("{} is given twice (as resolved)", peer.addr));
        }
    }
    Ok(())
}

/// No address is both a one-shot peer and a static one: the static peer is
/// dialled at start anyway, and two dials at once would open two connections
/// to one peer.
fn check_not_both(peers: &[PeerAddress], static_peers: &[StaticPeerAddress]) -> Result<(), String> {
    match peers
        .iter()
        .find(|peer| static_peers.iter().any(|s| s.addr == peer.addr))
    {
        Some(peer) => Err(format!(
            "{} is both a peer (--peer, key `peer`) and a static peer (--static-peer, \
             key `static-peer`); a static peer is dialled at start too: give it once, as a static peer",
            peer.addr
        )),
        None => Ok(()),
    }
}

/// A list of bootnodes the core keeps: at most [`BOOTNODES_MAX`] (it would
/// ignore the rest), each address once.
fn check_bootnodes(bootnodes: &[BootnodeAddress]) -> Result<(), String> {
    if bootnodes.len() > BOOTNODES_MAX {
        return Err(format!(
            "{} bootnodes given, at most {BOOTNODES_MAX} are kept",
            bootnodes.len()
        ));
    }
    check_once(bootnodes.iter().map(|bootnode| bootnode.addr))
}

/// Addresses to advertise: at most [`ADDRESSES_PER_RECORD_MAX`] (what one
/// signed record holds), each once.
fn check_advertise(addresses: &[SocketAddr]) -> Result<(), String> {
    if addresses.len() > ADDRESSES_PER_RECORD_MAX {
        return Err(format!(
            "{} addresses given, a record holds at most {ADDRESSES_PER_RECORD_MAX}",
            addresses.len()
        ));
    }
    check_once(addresses.iter().copied())
}

fn check_once(addresses: impl Iterator<Item = SocketAddr>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for addr in addresses {
        if !seen.insert(addr) {
            return Err(format!("{addr} is given twice (as resolved)"));
        }
    }
    Ok(())
}

/// Every address (with its text as given) one discovery accepts: what it
/// would refuse in a record is refused here, before the node starts,
/// rather than dropped with a log line after.
fn check_dialable(
    addresses: impl Iterator<Item = (String, SocketAddr)>,
    allow_private: bool,
) -> Result<(), String> {
    for (text, addr) in addresses {
        check_address(&addr, allow_private)
            .map_err(|refusal| format!("{text}: {}", refusal_text(refusal)))?;
    }
    Ok(())
}

/// Why discovery refuses an address, and what to do about it.
fn refusal_text(refusal: AddressRefusal) -> &'static str {
    match refusal {
        AddressRefusal::PortZero => "port 0 cannot be dialled",
        AddressRefusal::NotUnicast => {
            "not an address a peer can dial (unspecified, multicast or broadcast)"
        }
        AddressRefusal::Private => {
            "a loopback, private or link-local address, which discovery refuses unless \
             --allow-private (key `allow-private`) is given: for a network on one host or \
             a private network"
        }
    }
}

fn check_target_peers(peers: usize) -> Result<usize, String> {
    if !(1..=PEERS_MAX).contains(&peers) {
        return Err(format!(
            "{peers} peers: must be 1..={PEERS_MAX} (the most peers a node keeps)"
        ));
    }
    Ok(peers)
}

fn parse_target_peers(text: &str) -> Result<usize, String> {
    check_target_peers(text.parse().map_err(|error| format!("{error}"))?)
}

fn check_body_bytes(bytes: usize) -> Result<usize, String> {
    if bytes > BLOCK_BODY_BYTES_MAX {
        return Err(format!(
            "{bytes} is more than a block body may hold ({BLOCK_BODY_BYTES_MAX})"
        ));
    }
    Ok(bytes)
}

fn check_workers(workers: usize) -> Result<usize, String> {
    if !(1..=WORKER_THREADS_MAX).contains(&workers) {
        return Err(format!(
            "{workers} worker threads: must be 1..={WORKER_THREADS_MAX}"
        ));
    }
    Ok(workers)
}

/// The shortest `--peer-silence-secs`: it pings every third of it, and a
/// peer answers at most 2 Pings per 10 s (`reqresp::limits`), so shorter
/// would have honest peers refuse our Pings.
pub const PEER_SILENCE_SECS_MIN: u64 = 20;
/// The longest `--peer-silence-secs`: an hour; a frozen peer's slot is
/// held no longer than that.
pub const PEER_SILENCE_SECS_MAX: u64 = 3_600;

fn check_peer_silence_secs(secs: u64) -> Result<u64, String> {
    if !(PEER_SILENCE_SECS_MIN..=PEER_SILENCE_SECS_MAX).contains(&secs) {
        return Err(format!(
            "{secs} s of silence: must be {PEER_SILENCE_SECS_MIN}..={PEER_SILENCE_SECS_MAX}"
        ));
    }
    Ok(secs)
}

fn parse_peer_silence_secs(text: &str) -> Result<u64, String> {
    check_peer_silence_secs(text.parse().map_err(|error| format!("{error}"))?)
}

fn parse_body_bytes(text: &str) -> Result<usize, String> {
    check_body_bytes(text.parse().map_err(|error| format!("{error}"))?)
}

fn parse_workers(text: &str) -> Result<usize, String> {
    check_workers(text.parse().map_err(|error| format!("{error}"))?)
}

pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".to_owned()),
    }
}

/// `--record-bytes-max`: at least [`RECORD_BYTES_MAX_MIN`].
pub fn parse_record_bytes_max(text: &str) -> Result<u64, String> {
    let bytes: u64 = text.parse().map_err(|error| format!("{error}"))?;
    if bytes < RECORD_BYTES_MAX_MIN {
        return Err(format!(
            "{bytes} bytes is below {RECORD_BYTES_MAX_MIN}, too little for a recording"
        ));
    }
    Ok(bytes)
}

pub fn parse_clock_policy(text: &str) -> Result<ClockPolicy, String> {
    match text {
        "rebase" => Ok(ClockPolicy::Rebase),
        "refuse" => Ok(ClockPolicy::Refuse),
        _ => Err("expected rebase or refuse".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::collections::BTreeMap;

    use crate::Cli;
    use meshsync_core::peer::{REDIAL_BACKOFF_INITIAL, REDIAL_BACKOFF_MAX};

    /// The example file in the repository.
    const EXAMPLE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/node.example.toml"
    ));

    /// Every key of `text` (a TOML file) with its value.
    fn keys_of(text: &str) -> BTreeMap<String, toml::Value> {
        toml::from_str::<toml::Table>(text)
            .expect("valid TOML")
            .into_iter()
            .collect()
    }

    /// The long names of `meshsync node`'s flags that are also keys.
    fn node_flags() -> Vec<String> {
        let cli = Cli::command();
        let node = cli.find_subcommand("node").expect("`meshsync node` exists");
        node.get_arguments()
            .filter_map(|argument| argument.get_long())
            .filter(|long| *long != "help" && !COMMAND_LINE_ONLY.contains(long))
            .map(str::to_owned)
            .collect()
    }

    fn flags(arguments: &[&str]) -> NodeFlags {
        let mut all = vec!["meshsync", "node"];
        all.extend_from_slice(arguments);
        match Cli::try_parse_from(all).expect("the flags parse").command {
            crate::CliCommand::Node(flags) => *flags,
            _ => unreachable!("the subcommand is node"),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("the temp dir is writable");
        path
    }

    #[test]
    fn every_flag_is_a_key_and_every_key_a_flag() {
        let mut flags = node_flags();
        flags.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|key| (*key).to_owned()).collect();
        keys.sort();
        assert_eq!(flags, keys);
    }

    /// The example names every flag as a key, and is a valid configuration:
    /// adding a flag without adding its key there fails here.
    #[test]
    fn the_example_sets_every_key_and_parses() {
        let in_example = keys_of(EXAMPLE);
        let missing: Vec<String> = node_flags()
            .into_iter()
            .filter(|flag| !in_example.contains_key(flag))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/node.example.toml has no key for --{}",
            missing.join(", --")
        );
        let dir = meshsync_mio::testing::TempDir::new("config-example");
        let path = write(dir.path(), "node.toml", EXAMPLE);
        let config = flags(&["--config", path.to_str().unwrap()])
            .resolve()
            .expect("the example is a valid configuration");
        // Paths in it are the file's directory's.
        assert_eq!(config.key, dir.path().join("node1.key"));
        // Every key with a comment above it, saying what it means and its default.
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for key in KEYS {
            let at = lines
                .iter()
                .position(|line| line.starts_with(&format!("{key} =")))
                .expect("every key is set at the start of a line");
            let comment: Vec<&str> = lines[..at]
                .iter()
                .rev()
                .take_while(|line| line.starts_with('#'))
                .copied()
                .collect();
            assert!(
                comment.iter().any(|line| line.contains("Default")),
                "`{key}` in docs/node.example.toml has no comment naming its default"
            );
        }
    }

    /// The defaults the help names by hand are the constants the node uses.
    #[test]
    fn the_help_names_the_defaults_in_force() {
        let mut cli = Cli::command();
        let node = cli
            .find_subcommand_mut("node")
            .expect("`meshsync node` exists");
        let help = node.render_long_help().to_string();
        for default in [
            format!("[default: {DEVNET_BODY_BYTES_DEFAULT}]"),
            format!("[default: {}]", STORE_FAILING_EXIT_AFTER_DEFAULT.as_secs()),
            format!("[default: {STATUS_INTERVAL_SECS_DEFAULT}]"),
            format!("[default: {PEERS_TARGET}]"),
            format!("at most {BOOTNODES_MAX}, each address once"),
            format!("at most {ADDRESSES_PER_RECORD_MAX}, each once"),
            format!("(1 to {PEERS_MAX})"),
            "[default: text]".to_owned(),
            "[default: rebase]".to_owned(),
            // --static-peer's backoff, as the core schedules it.
            format!(
                "({} s doubling to {} min)",
                REDIAL_BACKOFF_INITIAL.as_secs(),
                REDIAL_BACKOFF_MAX.as_secs() / 60
            ),
        ] {
            assert!(help.contains(&default), "no {default} in {help}");
        }
    }

    #[test]
    fn a_flag_overrides_the_file_and_the_file_the_defaults() {
        let dir = meshsync_mio::testing::TempDir::new("config-override");
        let path = write(
            dir.path(),
            "node.toml",
            "listen = \"127.0.0.1:9001\"\nkey = \"keys/node.key\"\nbody-bytes = 2048\n\
             repair = true\npeer = [\"127.0.0.1:9002\"]\nclock-jump = \"refuse\"\n",
        );
        let config = path.to_str().unwrap();
        let from_file = flags(&["--config", config]).resolve().unwrap();
        assert_eq!(from_file.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(from_file.key, dir.path().join("keys/node.key"));
        assert_eq!(from_file.body_bytes, 2048);
        assert!(from_file.repair);
        assert_eq!(from_file.peers.len(), 1);
        assert_eq!(from_file.clock_jump, ClockPolicy::Refuse);
        // What the file leaves out keeps its default.
        assert_eq!(from_file.store_failing_exit_secs, 300);
        assert_eq!(from_file.workers, None);
        assert_eq!(from_file.metrics, None);
        assert_eq!(from_file.status_interval_secs, STATUS_INTERVAL_SECS_DEFAULT);
        assert_eq!(from_file.log_format, LogFormat::Text);

        let overridden = flags(&[
            "--config",
            config,
            "--listen",
            "127.0.0.1:9100",
            "--body-bytes",
            "16",
            "--repair=false",
            "--peer",
            "127.0.0.1:9003",
            "--peer",
            "127.0.0.1:9004",
        ])
        .resolve()
        .unwrap();
        assert_eq!(overridden.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(overridden.body_bytes, 16);
        assert!(!overridden.repair);
        let peers: Vec<String> = overridden.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["127.0.0.1:9003", "127.0.0.1:9004"]);
        // Keys no flag touched stay the file's.
        assert_eq!(overridden.key, from_file.key);
        assert_eq!(overridden.clock_jump, ClockPolicy::Refuse);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let dir = meshsync_mio::testing::TempDir::new("config-errors");
        let cases = [
            (
                "listen = \"127.0.0.1:1\"\nlisten-port = 9\n",
                "unknown key `listen-port`",
            ),
            ("body_bytes = 9\n", "`body-bytes`"),
            (
                "accept-fresh-watermark = true\n",
                "give --accept-fresh-watermark on the command line",
            ),
            ("body-bytes = \"big\"\n", "key `body-bytes`: invalid type"),
            (
                "body-bytes = 99999999\n",
                "key `body-bytes`: 99999999 is more than",
            ),
            ("workers = 0\n", "key `workers`: 0 worker threads"),
            (
                "peer-silence-secs = 3601\n",
                "key `peer-silence-secs`: 3601 s of silence: must be 20..=3600",
            ),
            ("listen = \"nowhere\"\n", "key `listen`: \"nowhere\""),
            ("peer = \"127.0.0.1:1\"\n", "key `peer`: invalid type"),
            (
                "peer = [\"127.0.0.1\"]\n",
                "key `peer`: `127.0.0.1` is not an address",
            ),
            (
                "log-format = \"xml\"\n",
                "key `log-format`: \"xml\": expected text or json",
            ),
            ("metrics = \"nowhere\"\n", "key `metrics`: \"nowhere\""),
            (
                "status-interval-secs = \"often\"\n",
                "key `status-interval-secs`: invalid type",
            ),
            (
                "clock-jump = \"maybe\"\n",
                "key `clock-jump`: \"maybe\": expected rebase or refuse",
            ),
            (
                "store-failing-exit-secs = -1\n",
                "key `store-failing-exit-secs`",
            ),
            ("repair = \"yes\"\n", "key `repair`: invalid type"),
            ("key = \"\"\n", "key `key`: an empty path"),
            ("listen = \n", "line 1: not TOML"),
        ];
        for (index, (text, expected)) in cases.iter().enumerate() {
            let path = write(dir.path(), &format!("bad-{index}.toml"), text);
            let error = flags(&["--config", path.to_str().unwrap()])
                .resolve()
                .expect_err(text);
            assert!(
                error.starts_with(&format!("config {}: ", path.display())),
                "{error}"
            );
            assert!(error.contains(expected), "{text:?} gave {error}");
            assert!(!error.contains('\n'), "not one line: {error}");
        }
        let missing = flags(&["--key", "k"]).resolve().unwrap_err();
        assert!(missing.contains("--listen"), "{missing}");
    }

    /// `--static-peer ADDR@PEERID` values as the node would get them, or
    /// clap's refusal, which names the flag.
    fn static_peer_flags(values: &[String]) -> Result<Vec<String>, String> {
        let mut arguments = vec!["meshsync".to_owned(), "node".to_owned()];
        for value in values {
            arguments.extend(["--static-peer".to_owned(), value.clone()]);
        }
        let cli = Cli::try_parse_from(arguments).map_err(|error| error.to_string())?;
        let crate::CliCommand::Node(mut flags) = cli.command else {
            unreachable!("the subcommand is node")
        };
        flags.listen = Some("127.0.0.1:9000".parse().unwrap());
        flags.key = Some(PathBuf::from("node.key"));
        let config = flags.resolve()?;
        Ok(config.static_peers.iter().map(|p| p.to_string()).collect())
    }

    /// `STATIC_PEERS_MAX + extra` distinct static peers, as flag values.
    fn many_static_peers(extra: usize) -> Vec<String> {
        let id = meshsync_core::Identity::from_seed(8).peer_id();
        (0..STATIC_PEERS_MAX + extra)
            .map(|index| format!("127.0.0.1:{}@{id}", 10_000 + index))
            .collect()
    }

    #[test]
    fn static_peers_parse_from_the_flag_and_each_mistake_is_named() {
        let id = meshsync_core::Identity::from_seed(4).peer_id();
        let good = vec![format!("127.0.0.1:9002@{id}"), format!("[::1]:9003@{id}")];
        assert_eq!(static_peer_flags(&good).unwrap(), good);

        let refused = [
            (format!("127.0.0.1@{id}"), "`127.0.0.1` is not an address"),
            ("127.0.0.1:9002@nope".to_owned(), "`nope` is not a peer id"),
            ("127.0.0.1:9002".to_owned(), "has no `@PEERID`"),
        ];
        for (value, expected) in refused {
            let error = static_peer_flags(std::slice::from_ref(&value)).unwrap_err();
            assert!(error.contains("--static-peer"), "{value}: {error}");
            assert!(error.contains(expected), "{value}: {error}");
        }

        // The core's cap, not one more.
        assert_eq!(
            static_peer_flags(&many_static_peers(0)).unwrap().len(),
            STATIC_PEERS_MAX
        );
        let error = static_peer_flags(&many_static_peers(1)).unwrap_err();
        assert_eq!(
            error,
            format!(
                "--static-peer: {} static peers given, at most {STATIC_PEERS_MAX} are kept",
                STATIC_PEERS_MAX + 1
            )
        );

        let twice = [
            good[0].clone(),
            format!(
                "127.0.0.1:9002@{}",
                meshsync_core::Identity::from_seed(5).peer_id()
            ),
        ];
        let error = static_peer_flags(&twice).unwrap_err();
        assert_eq!(
            error,
            "--static-peer: 127.0.0.1:9002 is given twice (as resolved)"
        );
    }

    #[test]
    fn static_peers_from_the_file_are_checked_as_the_flag() {
        let dir = meshsync_mio::testing::TempDir::new("config-static-peers");
        let id = meshsync_core::Identity::from_seed(4).peer_id();
        let quoted = |values: &[String]| {
            let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            format!("static-peer = [{}]\n", items.join(", "))
        };
        let good = write(
            dir.path(),
            "good.toml",
            &format!(
                "listen = \"127.0.0.1:9001\"\nkey = \"k\"\n{}",
                quoted(&[format!("127.0.0.1:9002@{id}")])
            ),
        );
        let config = flags(&["--config", good.to_str().unwrap()])
            .resolve()
            .unwrap();
        assert_eq!(config.static_peers.len(), 1);
        assert_eq!(config.static_peers[0].peer, id);
        // A flag replaces the whole list.
        let other = format!("127.0.0.1:9005@{id}");
        let replaced = flags(&["--config", good.to_str().unwrap(), "--static-peer", &other])
            .resolve()
            .unwrap();
        let replaced: Vec<String> = replaced
            .static_peers
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(replaced, [other]);

        let too_many = format!(
            "key `static-peer`: {} static peers given, at most {STATIC_PEERS_MAX}",
            STATIC_PEERS_MAX + 1
        );
        let cases = [
            (
                "static-peer = \"x\"\n".to_owned(),
                "key `static-peer`: invalid type",
            ),
            (
                quoted(&["127.0.0.1:9002".to_owned()]),
                "key `static-peer`: `127.0.0.1:9002` has no `@PEERID`",
            ),
            (
                quoted(&[format!("nowhere@{id}")]),
                "key `static-peer`: `nowhere` is not an address",
            ),
            (
                quoted(&["127.0.0.1:9002@x".to_owned()]),
                "key `static-peer`: `x` is not a peer id",
            ),
            (quoted(&many_static_peers(1)), too_many.as_str()),
            (
                quoted(&[
                    format!("127.0.0.1:9002@{id}"),
                    format!("127.0.0.1:9002@{id}"),
                ]),
                "key `static-peer`: 127.0.0.1:9002 is given twice",
            ),
            (
                format!(
                    "peer = [\"127.0.0.1:9002\"]\n{}",
                    quoted(&[format!("127.0.0.1:9002@{id}")])
                ),
                "127.0.0.1:9002 is both a peer (--peer, key `peer`) and a static peer",
            ),
        ];
        for (index, (text, expected)) in cases.iter().enumerate() {
            let text = format!("listen = \"127.0.0.1:9001\"\nkey = \"k\"\n{text}");
            let path = write(dir.path(), &format!("bad-{index}.toml"), &text);
            let error = flags(&["--config", path.to_str().unwrap()])
                .resolve()
                .expect_err(&text);
            assert!(
                error.starts_with(&format!("config {}: ", path.display())),
                "{error}"
            );
            assert!(error.contains(expected), "{text:?} gave {error}");
            assert!(!error.contains('\n'), "not one line: {error}");
        }
        // A peer from the file and the same address as a flag: refused too.
        let one_shot = write(
            dir.path(),
            "peer.toml",
            "listen = \"127.0.0.1:9001\"\nkey = \"k\"\npeer = [\"127.0.0.1:9002\"]\n",
        );
        let same = format!("127.0.0.1:9002@{id}");
        let error = flags(&[
            "--config",
            one_shot.to_str().unwrap(),
            "--static-peer",
            &same,
        ])
        .resolve()
        .unwrap_err();
        assert!(
            error.starts_with("127.0.0.1:9002 is both a peer"),
            "{error}"
        );
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let dir = meshsync_mio::testing::TempDir::new("config-round-trip");
        let id = meshsync_core::Identity::from_seed(3).peer_id();
        let path = write(
            dir.path(),
            "node.toml",
            &format!(
                "listen = \"[::1]:9001\"\nkey = \"node.key\"\npeer = [\"127.0.0.1:9002@{id}\", \
                 \"127.0.0.1:9003\"]\nstatic-peer = [\"127.0.0.1:9004@{id}\"]\nproposer-key = [\"a.key\", \"/abs/b.key\"]\n\
                 data-dir = \"data \\\"quoted\\\"\"\nworkers = 3\nmetrics = \"127.0.0.1:9100\"\n\
             status-interval-secs = 5\nlog-format = \"json\"\nbootnode = [\"[::1]:9005@{id}\"]\n\
             advertise = [\"127.0.0.1:9001\", \"[::1]:9001\"]\nallow-private = true\n\
             target-peers = 8\nmax-peers = 9\nno-discovery = true\n"
            ),
        );
        let config = flags(&["--config", path.to_str().unwrap(), "--network", "7"])
            .resolve()
            .unwrap();
        let printed = config.to_toml().unwrap();
        // Written elsewhere, it reads back as the same configuration.
        let other = meshsync_mio::testing::TempDir::new("config-round-trip-other");
        let again_path = write(other.path(), "printed.toml", &printed);
        let again = flags(&["--config", again_path.to_str().unwrap()])
            .resolve()
            .unwrap();
        assert_eq!(again, config, "{printed}");
        assert_eq!(again.to_toml().unwrap(), printed);
        assert!(printed.contains("# genesis is unset"), "{printed}");
        assert!(!printed.contains("# workers is unset"), "{printed}");
        assert!(!printed.contains("# advertise is unset"), "{printed}");
        assert_eq!(again.bootnodes.len(), 1);
        assert_eq!(again.advertise.len(), 2);
        assert!(again.allow_private && again.no_discovery);
        assert_eq!((again.target_peers, again.max_peers), (8, 9));
    }

    /// A configuration from `arguments` after `--listen LISTEN --key k`, or
    /// the refusal (clap's, or resolve's).
    fn discovery_flags(listen: &str, arguments: &[&str]) -> Result<NodeConfig, String> {
        let mut all = vec!["meshsync", "node", "--listen", listen, "--key", "k"];
        all.extend_from_slice(arguments);
        let cli = Cli::try_parse_from(all).map_err(|error| error.to_string())?;
        let crate::CliCommand::Node(flags) = cli.command else {
            unreachable!("the subcommand is node")
        };
        flags.resolve()
    }

    #[test]
    fn discovery_flags_parse_and_each_mistake_is_named() {
        let id = meshsync_core::Identity::from_seed(4).peer_id();
        let boot = format!("127.0.0.1:9002@{id}");
        let config = discovery_flags(
            "0.0.0.0:9001",
            &[
                "--bootnode",
                &boot,
                "--advertise",
                "127.0.0.1:9001",
                "--allow-private",
                "--target-peers",
                "7",
                "--max-peers",
                "12",
            ],
        )
        .unwrap();
        assert_eq!(config.bootnodes[0].to_string(), boot);
        assert_eq!(config.advertise, ["127.0.0.1:9001".parse().unwrap()]);
        assert!(config.allow_private && !config.no_discovery);
        assert_eq!((config.target_peers, config.max_peers), (7, 12));
        // The defaults.
        let plain = discovery_flags("203.0.113.5:9001", &[]).unwrap();
        assert!(!plain.allow_private && !plain.no_discovery);
        assert_eq!(
            (plain.target_peers, plain.max_peers),
            (PEERS_TARGET, PEERS_MAX)
        );
        assert!(plain.bootnodes.is_empty() && plain.advertise.is_empty());

        let many_bootnodes: Vec<String> = (0..=BOOTNODES_MAX)
            .flat_map(|index| {
                [
                    "--bootnode".to_owned(),
                    format!("203.0.113.7:{}@{id}", 10_000 + index),
                ]
            })
            .collect();
        let many_bootnodes: Vec<&str> = many_bootnodes.iter().map(String::as_str).collect();
        let five: Vec<&str> = ["1", "2", "3", "4", "5"]
            .iter()
            .flat_map(|port| {
                [
                    "--advertise",
                    Box::leak(format!("203.0.113.5:{port}").into_boxed_str()),
                ]
            })
            .collect();
        let cases: Vec<(Vec<&str>, String)> = vec![
            (
                vec!["--bootnode", "127.0.0.1:9002"],
                "`127.0.0.1:9002` has no `@PEERID`: discovery starts from a bootnode".to_owned(),
            ),
            (
                many_bootnodes,
                format!(
                    "--bootnode: {} bootnodes given, at most {BOOTNODES_MAX} are kept",
                    BOOTNODES_MAX + 1
                ),
            ),
            (
                vec!["--bootnode", &boot],
                format!("--bootnode {boot}: a loopback, private or link-local address"),
            ),
            (
                five,
                format!(
                    "--advertise: 5 addresses given, a record holds at most {ADDRESSES_PER_RECORD_MAX}"
                ),
            ),
            (
                vec!["--advertise", "192.168.1.5:9001"],
                "--advertise 192.168.1.5:9001: a loopback, private or link-local address, which discovery refuses unless --allow-private"
                    .to_owned(),
            ),
            (
                vec!["--advertise", "0.0.0.0:9001", "--allow-private"],
                "--advertise 0.0.0.0:9001: not an address a peer can dial".to_owned(),
            ),
            (
                vec!["--advertise", "203.0.113.5:0"],
                "--advertise 203.0.113.5:0: port 0 cannot be dialled".to_owned(),
            ),
            (
                vec!["--advertise", "203.0.113.5:1", "--advertise", "203.0.113.5:1"],
                "--advertise: 203.0.113.5:1 is given twice".to_owned(),
            ),
            (
                vec!["--advertise", "203.0.113.5"],
                "invalid value '203.0.113.5' for '--advertise <ADDR>'".to_owned(),
            ),
            (
                vec!["--target-peers", "0"],
                format!("0 peers: must be 1..={PEERS_MAX}"),
            ),
            (
                vec!["--target-peers", "51"],
                format!("51 peers: must be 1..={PEERS_MAX}"),
            ),
            (
                vec!["--max-peers", "51"],
                format!("51 peers: must be 1..={PEERS_MAX}"),
            ),
            (
                vec!["--max-peers", "20"],
                "--max-peers 20: below --target-peers (default) 25".to_owned(),
            ),
            (
                vec!["--peer-silence-secs", "19"],
                "19 s of silence: must be 20..=3600".to_owned(),
            ),
            (
                vec!["--target-peers", "30", "--max-peers", "20"],
                "--max-peers 20: below --target-peers 30".to_owned(),
            ),
        ];
        for (arguments, expected) in cases {
            let error = discovery_flags("203.0.113.5:9001", &arguments)
                .map(|_| ())
                .expect_err(&expected);
            assert!(error.contains(&expected), "{arguments:?}: {error}");
        }
    }

    #[test]
    fn discovery_keys_are_checked_as_the_flags() {
        let dir = meshsync_mio::testing::TempDir::new("config-discovery");
        let id = meshsync_core::Identity::from_seed(4).peer_id();
        let good = write(
            dir.path(),
            "good.toml",
            &format!(
                "listen = \"0.0.0.0:9001\"\nkey = \"k\"\nbootnode = [\"127.0.0.1:9002@{id}\"]\n\
                 advertise = [\"127.0.0.1:9001\"]\nallow-private = true\ntarget-peers = 3\n"
            ),
        );
        let config = flags(&["--config", good.to_str().unwrap()])
            .resolve()
            .unwrap();
        assert_eq!(config.bootnodes[0].peer, id);
        assert_eq!(config.target_peers, 3);
        // `--allow-private=false` on the command line: the file's private
        // addresses are refused, naming the file and the key.
        let error = flags(&["--config", good.to_str().unwrap(), "--allow-private=false"])
            .resolve()
            .unwrap_err();
        assert!(
            error.starts_with(&format!(
                "config {}: key `bootnode`: 127.0.0.1:9002@{id}: a loopback",
                good.display()
            )),
            "{error}"
        );
        // A flag replaces the file's list, and is judged as a flag.
        let error = flags(&[
            "--config",
            good.to_str().unwrap(),
            "--advertise",
            "0.0.0.0:9",
        ])
        .resolve()
        .unwrap_err();
        assert!(
            error.starts_with("--advertise 0.0.0.0:9: not an address"),
            "{error}"
        );

        let cases = [
            (
                "bootnode = \"x\"\n".to_owned(),
                "key `bootnode`: invalid type".to_owned(),
            ),
            (
                "bootnode = [\"127.0.0.1:9002\"]\n".to_owned(),
                "key `bootnode`: `127.0.0.1:9002` has no `@PEERID`".to_owned(),
            ),
            (
                format!("bootnode = [\"203.0.113.7:1@{id}\", \"203.0.113.7:1@{id}\"]\n"),
                "key `bootnode`: 203.0.113.7:1 is given twice".to_owned(),
            ),
            (
                "advertise = [\"nowhere\"]\n".to_owned(),
                "key `advertise`: \"nowhere\": invalid socket address syntax".to_owned(),
            ),
            (
                "advertise = [\"10.1.2.3:9001\"]\n".to_owned(),
                "key `advertise`: 10.1.2.3:9001: a loopback, private or link-local address"
                    .to_owned(),
            ),
            (
                "allow-private = \"yes\"\n".to_owned(),
                "key `allow-private`: invalid type".to_owned(),
            ),
            (
                "target-peers = 0\n".to_owned(),
                format!("key `target-peers`: 0 peers: must be 1..={PEERS_MAX}"),
            ),
            (
                "max-peers = 10\n".to_owned(),
                "key `max-peers` 10: below --target-peers (default) 25".to_owned(),
            ),
            (
                "no-discovery = 1\n".to_owned(),
                "key `no-discovery`: invalid type".to_owned(),
            ),
        ];
        for (index, (text, expected)) in cases.iter().enumerate() {
            let text = format!("listen = \"203.0.113.5:9001\"\nkey = \"k\"\n{text}");
            let path = write(dir.path(), &format!("bad-{index}.toml"), &text);
            let error = flags(&["--config", path.to_str().unwrap()])
                .resolve()
                .expect_err(&text);
            assert!(
                error.starts_with(&format!("config {}: ", path.display())),
                "{error}"
            );
            assert!(error.contains(expected.as_str()), "{text:?} gave {error}");
            assert!(!error.contains('\n'), "not one line: {error}");
        }
    }

    #[test]
    fn discovery_runs_when_there_is_an_address_to_advertise_and_says_why_not() {
        let id = meshsync_core::Identity::from_seed(4).peer_id();
        let boot = format!("203.0.113.7:9002@{id}");
        let plan = |listen: &str, arguments: &[&str]| {
            discovery_flags(listen, arguments).unwrap().discovery(1_234)
        };
        // A public listen address is advertised as it is.
        let DiscoveryPlan::On(on) = plan("203.0.113.5:9001", &["--bootnode", &boot]) else {
            panic!("discovery is on by default")
        };
        assert_eq!(on.addresses, ["203.0.113.5:9001".parse().unwrap()]);
        assert_eq!(on.bootnodes, [(id, "203.0.113.7:9002".parse().unwrap())]);
        assert_eq!((on.peers_target, on.record_seq), (PEERS_TARGET, 1_234));
        assert!(!on.allow_private);
        // Port 0 stays, for the driver to fill.
        let DiscoveryPlan::On(on) = plan("127.0.0.1:0", &["--allow-private"]) else {
            panic!("a loopback address with --allow-private is advertised")
        };
        assert_eq!(on.addresses, ["127.0.0.1:0".parse().unwrap()]);
        // --advertise wins over the listen address.
        let DiscoveryPlan::On(on) = plan("0.0.0.0:9001", &["--advertise", "203.0.113.5:9"]) else {
            panic!("--advertise turns it on")
        };
        assert_eq!(on.addresses, ["203.0.113.5:9".parse().unwrap()]);

        assert_eq!(on.learn_address_port, None, "--advertise is authoritative");
        // Every interface and no --advertise: on, learning the address
        // from peers at the listen port.
        for listen in ["0.0.0.0:9001", "[::]:9001"] {
            let DiscoveryPlan::On(on) = plan(listen, &[]) else {
                panic!("{listen}: discovery learns its address")
            };
            assert!(on.addresses.is_empty(), "{listen}: {:?}", on.addresses);
            assert_eq!(on.learn_address_port, Some(9001), "{listen}");
        }
        let DiscoveryPlan::On(on) = plan("203.0.113.5:9001", &[]) else {
            panic!("a public listen address is advertised")
        };
        assert_eq!(on.learn_address_port, None);

        // Off, with one warning saying what to pass.
        let DiscoveryPlan::Off {
            warning: Some(warning),
        } = plan("127.0.0.1:9001", &[])
        else {
            panic!("a private listen address without --allow-private")
        };
        assert!(warning.contains("--allow-private"), "{warning}");
        let DiscoveryPlan::Off {
            warning: Some(warning),
        } = plan("255.255.255.255:9001", &[])
        else {
            panic!("a broadcast listen address is no address to learn")
        };
        assert!(warning.contains("pass --advertise ADDR"), "{warning}");
        // Asked for: no warning, unless bootnodes were given for nothing.
        assert_eq!(
            plan("203.0.113.5:9001", &["--no-discovery"]),
            DiscoveryPlan::Off { warning: None }
        );
        let DiscoveryPlan::Off {
            warning: Some(warning),
        } = plan("203.0.113.5:9001", &["--no-discovery", "--bootnode", &boot])
        else {
            panic!("bootnodes with --no-discovery are worth a warning")
        };
        assert!(warning.contains("not dialled"), "{warning}");
    }
}

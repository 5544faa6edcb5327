//! A chat on the meshsync driver: an application embedding a node.
//!
//! Every line typed is published on the gossip topic [`CHAT_TOPIC`]; every
//! line that arrives there is printed. Each node also serves an application
//! request protocol, [`HISTORY_PROTOCOL`], answering with the last
//! [`HISTORY_LINES_MAX`] lines it has seen (said or heard), and asks each
//! peer for its history as the peer joins. Two terminals:
//!
//! ```sh
//! cargo run -p meshsync-mio --example chat -- --listen 127.0.0.1:9101
//! cargo run -p meshsync-mio --example chat -- --listen 127.0.0.1:9102 --peer 127.0.0.1:9101
//! ```
//!
//! Type a line to say it, `/history` to ask every peer for its history,
//! Ctrl-D to leave.
//!
//! # Design
//! The driver runs the node on its own thread ([`Driver::spawn`]); the
//! application is one more thread ([`run_chat`]) that owns the chat's state
//! and waits on two channels: the node's notifications
//! ([`Driver::subscribe`]) and the user's [`ChatInput`]s. It answers the
//! node with [`Command`]s through a [`DriverHandle`] (publish, validate a
//! gossip message, request, respond) and tells the user what happened as
//! [`ChatEvent`]s. [`Chat`] bundles the three; `main` is only the terminal.
//! `io-mio/tests/chat.rs` runs two [`Chat`]s against each other.
//!
//! # Security
//! Lines from peers are untrusted: a gossip message that is not a
//! sequence number and at most [`LINE_BYTES_MAX`] bytes of printable UTF-8
//! is rejected (which penalises its sender), and a history answer is cut to
//! [`HISTORY_LINES_MAX`] lines with anything unprintable replaced.
//!
//! # Limits
//! [`LINE_BYTES_MAX`] per line, [`HISTORY_LINES_MAX`] lines of history,
//! [`HISTORY_QUOTA`] history requests per peer.

use std::collections::{BTreeSet, VecDeque};
use std::io::BufRead;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use clap::Parser;
use meshsync_core::io::{Notification, RequestError};
use meshsync_core::reqresp::{Answer, ProtocolId, ProtocolName, Quota, ResultCode};
use meshsync_core::{Command, Config, Identity, PeerId, Topic, Validation};
use meshsync_mio::crossbeam_channel::{self, select, Receiver, Sender};
use meshsync_mio::{Driver, DriverHandle, PeerAddress, RunningDriver};

/// The gossip topic every line is published on.
pub const CHAT_TOPIC: &str = "/chat/lines/1";
/// The request protocol that answers with the last lines seen.
pub const HISTORY_PROTOCOL: &str = "/chat/history";
/// Longest line, in bytes of UTF-8: a chat line, not a file.
pub const LINE_BYTES_MAX: usize = 1024;
/// Lines a node keeps and answers with; older ones are dropped first. With
/// [`LINE_BYTES_MAX`] and a peer's name, an answer stays far below the
/// core's one-chunk application answer (`APPLICATION_RESPONSE_BYTES_MAX`).
pub const HISTORY_LINES_MAX: usize = 32;
/// History requests a peer may make: 4 per 10 s (one as it joins, a few by hand).
pub const HISTORY_QUOTA: Quota = Quota::new(4, meshsync_core::Duration::from_secs(10));
/// Bytes of a gossiped line before its text: a sequence number, so saying
/// the same words twice is two messages (gossip drops a repeated payload).
const SEQUENCE_BYTES: usize = 8;
/// Notifications and user inputs queued for the chat thread.
const INPUTS_QUEUED_MAX: usize = 256;
/// User-facing events queued before the chat thread waits for the reader.
const EVENTS_QUEUED_MAX: usize = 1_024;

/// What the user asks of the chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatInput {
    /// Publish this line.
    Say(String),
    /// Ask every connected peer for its history.
    AskHistory,
}

/// What the chat tells the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatEvent {
    /// A peer connected.
    Joined(PeerId),
    /// A peer left.
    Left(PeerId),
    /// A line from a peer.
    Message {
        /// Who wrote it.
        from: PeerId,
        /// What they wrote.
        text: String,
    },
    /// A peer's answer to a history request: its last lines, oldest first,
    /// each `<NAME> TEXT`.
    History {
        /// Who answered.
        peer: PeerId,
        /// Its lines.
        lines: Vec<String>,
    },
    /// Something the user should know: a line not sent, a request failed.
    Problem(String),
}

/// A running chat: the node on its thread, the chat on another.
pub struct Chat {
    driver: Option<RunningDriver>,
    inputs: Sender<ChatInput>,
    events: Receiver<ChatEvent>,
    thread: Option<JoinHandle<()>>,
}

impl Chat {
    /// Starts a node listening on `listen` on network `network_id`, joins
    /// the chat topic, serves the history protocol and dials `peers`.
    pub fn start(
        listen: SocketAddr,
        peers: &[PeerAddress],
        network_id: u64,
        identity: Identity,
        seed: [u8; 32],
    ) -> Result<Chat, String> {
        let mut driver = Driver::bind(listen, Config::new(network_id), identity, seed)
            .map_err(|error| format!("cannot start the node: {error}"))?;
        // Subscribed before anything runs, so no notification is missed.
        let notifications = driver.subscribe();
        let (topic, protocol) = names();
        driver.command(Command::RegisterProtocol {
            name: protocol,
            quota: HISTORY_QUOTA,
        });
        driver.command(Command::Subscribe { topic });
        for peer in peers {
            driver.command(peer.dial_command());
        }
        let me = driver.peer_id();
        let handle = driver.handle();
        let driver = driver
            .spawn("chat-node")
            .map_err(|error| format!("cannot start the node's thread: {error}"))?;
        let (inputs, inputs_receiver) = crossbeam_channel::bounded(INPUTS_QUEUED_MAX);
        let (events_sender, events) = crossbeam_channel::bounded(EVENTS_QUEUED_MAX);
        let thread = std::thread::Builder::new()
            .name("chat".to_owned())
            .spawn(move || {
                run_chat(
                    me,
                    &handle,
                    &notifications,
                    &inputs_receiver,
                    &events_sender,
                )
            })
            .map_err(|error| format!("cannot start the chat's thread: {error}"))?;
        Ok(Chat {
            driver: Some(driver),
            inputs,
            events,
            thread: Some(thread),
        })
    }

    /// Where the node listens (give it to the other side's `--peer`).
    pub fn local_addr(&self) -> SocketAddr {
        self.driver().local_addr()
    }

    /// The node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.driver().peer_id()
    }

    /// Publishes `line`.
    pub fn say(&self, line: &str) {
        self.input(ChatInput::Say(line.to_owned()));
    }

    /// Asks every connected peer for its history.
    pub fn ask_history(&self) {
        self.input(ChatInput::AskHistory);
    }

    /// What the chat tells the user, in order.
    pub fn events(&self) -> &Receiver<ChatEvent> {
        &self.events
    }

    /// Says Goodbye to every peer and stops both threads.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn driver(&self) -> &RunningDriver {
        self.driver
            .as_ref()
            .expect("the driver is only taken when the chat stops")
    }

    fn input(&self, input: ChatInput) {
        // Fails only once the chat thread is gone, when nothing can be done.
        let _ = self.inputs.send(input);
    }

    fn shut_down(&mut self) {
        if let Some(driver) = self.driver.take() {
            if let Err(error) = driver.stop() {
                eprintln!("the node stopped with an error: {error}");
            }
        }
        // The node is gone, so its notifications end and the chat thread returns.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The chat topic and the history protocol, as the core names them.
fn names() -> (Topic, ProtocolName) {
    let topic = Topic::new(CHAT_TOPIC).expect("the constant is a valid topic");
    let protocol =
        ProtocolName::new(HISTORY_PROTOCOL).expect("the constant is a valid protocol name");
    (topic, protocol)
}

/// The chat: waits on the node's notifications and the user's inputs until
/// the node stops, answering with commands to `node` and events to the user.
pub fn run_chat(
    me: PeerId,
    node: &DriverHandle,
    notifications: &Receiver<Notification>,
    inputs: &Receiver<ChatInput>,
    events: &Sender<ChatEvent>,
) {
    let mut chat = ChatState::new(me);
    loop {
        let (commands, said) = select! {
            recv(notifications) -> notification => match notification {
                Ok(notification) => chat.on_notification(notification),
                Err(_) => return, // The node stopped.
            },
            recv(inputs) -> input => match input {
                Ok(input) => chat.on_input(input),
                Err(_) => return, // The user left.
            },
        };
        for command in commands {
            // Fails only when the node stopped; its notifications then end too.
            let _ = node.command(command);
        }
        for event in said {
            if events.send(event).is_err() {
                return; // Nobody listens any more.
            }
        }
    }
}

/// The chat's state, apart from any IO: each handler returns the commands
/// for the node and the events for the user.
struct ChatState {
    me: PeerId,
    topic: Topic,
    protocol: ProtocolName,
    peers: BTreeSet<PeerId>,
    /// The last lines seen, oldest first, each `<NAME> TEXT`.
    history: VecDeque<String>,
    /// The sequence number of the next line we say.
    next_sequence: u64,
    /// The tag of the next history request.
    next_tag: u64,
}

type Outcome = (Vec<Command>, Vec<ChatEvent>);

impl ChatState {
    fn new(me: PeerId) -> ChatState {
        let (topic, protocol) = names();
        ChatState {
            me,
            topic,
            protocol,
            peers: BTreeSet::new(),
            history: VecDeque::with_capacity(HISTORY_LINES_MAX),
            next_sequence: fresh_sequence(),
            next_tag: 0,
        }
    }

    fn on_input(&mut self, input: ChatInput) -> Outcome {
        match input {
            ChatInput::Say(text) => {
                if let Err(why) = check_line(&text) {
                    return (vec![], vec![ChatEvent::Problem(format!("not sent: {why}"))]);
                }
                let mut payload = self.next_sequence.to_be_bytes().to_vec();
                self.next_sequence = self.next_sequence.wrapping_add(1);
                payload.extend_from_slice(text.as_bytes());
                self.remember(self.me, &text);
                let publish = Command::Publish {
                    topic: self.topic.clone(),
                    payload,
                };
                (vec![publish], vec![])
            }
            ChatInput::AskHistory => {
                let peers: Vec<PeerId> = self.peers.iter().copied().collect();
                let commands = peers
                    .into_iter()
                    .map(|peer| self.history_request(peer))
                    .collect();
                (commands, vec![])
            }
        }
    }

    fn on_notification(&mut self, notification: Notification) -> Outcome {
        match notification {
            Notification::PeerConnected { peer, .. } => {
                self.peers.insert(peer);
                (
                    vec![self.history_request(peer)],
                    vec![ChatEvent::Joined(peer)],
                )
            }
            Notification::PeerDisconnected { peer, .. } => {
                self.peers.remove(&peer);
                (vec![], vec![ChatEvent::Left(peer)])
            }
            Notification::GossipMessage {
                id,
                topic,
                payload,
                from,
            } => {
                if topic != self.topic {
                    // Not ours to judge: let it expire unforwarded.
                    let verdict = Validation::Ignore;
                    return (vec![Command::ValidateGossip { id, verdict }], vec![]);
                }
                match decode_line(&payload) {
                    Ok(text) => {
                        self.remember(from, &text);
                        let verdict = Validation::Accept;
                        (
                            vec![Command::ValidateGossip { id, verdict }],
                            vec![ChatEvent::Message { from, text }],
                        )
                    }
                    Err(_) => {
                        let verdict = Validation::Reject;
                        (vec![Command::ValidateGossip { id, verdict }], vec![])
                    }
                }
            }
            Notification::InboundRequest {
                peer, id, protocol, ..
            } if protocol == self.protocol => {
                let lines: Vec<&str> = self.history.iter().map(String::as_str).collect();
                // One chunk: an application answer carries at most one.
                let answer = Answer::Chunks(vec![lines.join("\n").into_bytes()]);
                (vec![Command::Respond { peer, id, answer }], vec![])
            }
            Notification::InboundRequest { peer, id, .. } => {
                let answer = Answer::Error {
                    code: ResultCode::InvalidRequest,
                    message: "not a protocol of this chat".to_owned(),
                };
                (vec![Command::Respond { peer, id, answer }], vec![])
            }
            Notification::Response {
                peer,
                protocol: ProtocolId::Application(protocol),
                chunks,
                ..
            } if protocol == self.protocol => {
                let lines = chunks
                    .first()
                    .map(|chunk| decode_history(chunk))
                    .unwrap_or_default();
                (vec![], vec![ChatEvent::History { peer, lines }])
            }
            Notification::RequestFailed {
                peer,
                protocol: ProtocolId::Application(protocol),
                error,
                ..
            } if protocol == self.protocol => {
                let why = match error {
                    RequestError::Refused { message, .. } => message,
                    other => format!("{other:?}"),
                };
                let problem = format!("no history from {}: {why}", name(&peer));
                (vec![], vec![ChatEvent::Problem(problem)])
            }
            Notification::PublishFailed { topic, error } if topic == self.topic => {
                let problem = format!("not sent: {error}");
                (vec![], vec![ChatEvent::Problem(problem)])
            }
            _ => (vec![], vec![]),
        }
    }

    fn history_request(&mut self, peer: PeerId) -> Command {
        self.next_tag += 1;
        Command::Request {
            peer,
            protocol: ProtocolId::Application(self.protocol),
            body: Vec::new(),
            tag: self.next_tag,
        }
    }

    fn remember(&mut self, from: PeerId, text: &str) {
        if self.history.len() == HISTORY_LINES_MAX {
            self.history.pop_front();
        }
        self.history.push_back(format!("<{}> {text}", name(&from)));
    }
}

/// A random first sequence number, so a line said again after a restart is
/// a new message, not a repeat the gossip layer drops.
fn fresh_sequence() -> u64 {
    let seed = meshsync_mio::os_seed();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&seed[..8]);
    u64::from_be_bytes(bytes)
}

/// A peer's short name: the first 8 characters of its id.
pub fn name(peer: &PeerId) -> String {
    peer.to_string().chars().take(8).collect()
}

/// Whether `text` may be said: at most [`LINE_BYTES_MAX`] bytes, no control characters.
fn check_line(text: &str) -> Result<(), String> {
    if text.len() > LINE_BYTES_MAX {
        return Err(format!(
            "{} bytes, more than a line may hold ({LINE_BYTES_MAX})",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("control characters".to_owned());
    }
    Ok(())
}

/// The text of a gossiped line: its sequence number, then printable UTF-8.
pub fn decode_line(payload: &[u8]) -> Result<String, String> {
    let text = payload
        .get(SEQUENCE_BYTES..)
        .ok_or("shorter than a sequence number")?;
    let text = std::str::from_utf8(text).map_err(|error| error.to_string())?;
    check_line(text)?;
    Ok(text.to_owned())
}

/// A history answer's lines: at most [`HISTORY_LINES_MAX`], each at most
/// [`LINE_BYTES_MAX`] characters, control characters replaced.
pub fn decode_history(chunk: &[u8]) -> Vec<String> {
    if chunk.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(chunk)
        .split('\n')
        .take(HISTORY_LINES_MAX)
        .map(|line| {
            line.chars()
                .take(LINE_BYTES_MAX)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
        .collect()
}

/// A chat over meshsync: type a line to say it, `/history` to ask the
/// peers for theirs, Ctrl-D to leave.
#[derive(Parser, Debug)]
struct Arguments {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A peer to dial, optionally with the identity it must prove. Repeatable.
    #[arg(long = "peer", value_name = "ADDR[@PEERID]")]
    peers: Vec<PeerAddress>,
    /// Network id; both sides must use the same.
    #[arg(long = "network", value_name = "ID", default_value_t = 1)]
    network_id: u64,
}

fn main() {
    let arguments = Arguments::parse();
    // The node's own log stays quiet unless asked for (RUST_LOG=info).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let chat = match Chat::start(
        arguments.listen,
        &arguments.peers,
        arguments.network_id,
        meshsync_mio::generate_identity(),
        meshsync_mio::os_seed(),
    ) {
        Ok(chat) => chat,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    println!(
        "you are {} at {}; another chat joins with --peer {}@{}",
        name(&chat.peer_id()),
        chat.local_addr(),
        chat.local_addr(),
        chat.peer_id()
    );
    let events = chat.events().clone();
    let printer = std::thread::spawn(move || {
        for event in events {
            match event {
                ChatEvent::Joined(peer) => println!("* {} joined", name(&peer)),
                ChatEvent::Left(peer) => println!("* {} left", name(&peer)),
                ChatEvent::Message { from, text } => println!("<{}> {text}", name(&from)),
                ChatEvent::History { peer, lines } => {
                    println!("* history of {} ({} lines):", name(&peer), lines.len());
                    for line in lines {
                        println!("*   {line}");
                    }
                }
                ChatEvent::Problem(problem) => println!("! {problem}"),
            }
        }
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "" => {}
            "/history" => chat.ask_history(),
            text => chat.say(text),
        }
    }
    chat.stop();
    let _ = printer.join();
}

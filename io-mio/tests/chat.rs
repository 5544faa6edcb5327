//! The chat example (`io-mio/examples/chat.rs`) as two users run it: two
//! chats on loopback, the second dialling the first. Each asks the other for
//! its history as it joins (both answer, empty); a line said on one is
//! printed on the other, both ways; and a history request then answers with
//! both lines, in order. Every wait is on the chats' events with a deadline.

#[path = "../examples/chat.rs"]
#[allow(dead_code)] // The example's `main` and its terminal are not used here.
mod chat;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat::{decode_history, decode_line, name, Chat, ChatEvent, HISTORY_LINES_MAX};
use meshsync_core::Identity;
use meshsync_mio::crossbeam_channel::RecvTimeoutError;
use meshsync_mio::PeerAddress;

/// The longest the test may take; a hang fails instead of blocking CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const NETWORK_ID: u64 = 1;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Waits for the first event of `chat` that `wanted` accepts, skipping the
/// others (a peer joining, say). Panics at `deadline`, naming what it saw.
fn wait_for(
    chat: &Chat,
    deadline: Instant,
    what: &str,
    mut wanted: impl FnMut(&ChatEvent) -> bool,
) -> ChatEvent {
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match chat.events().recv_timeout(left) {
            Ok(event) if wanted(&event) => return event,
            Ok(event) => seen.push(event),
            Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}; saw {seen:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the chat stopped while waiting for {what}; saw {seen:?}")
            }
        }
    }
}

#[test]
fn two_chats_exchange_lines_and_answer_history() {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let alice = Chat::start(loopback(), &[], NETWORK_ID, Identity::from_seed(1), [1; 32])
        .expect("alice starts");
    let first = PeerAddress {
        addr: alice.local_addr(),
        peer: Some(alice.peer_id()),
    };
    let bob = Chat::start(
        loopback(),
        &[first],
        NETWORK_ID,
        Identity::from_seed(2),
        [2; 32],
    )
    .expect("bob starts");
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());

    // Each asks the other as it joins; the answers are empty histories. A
    // node announces its topics before it answers anything, so once the
    // answer is in, the other's subscription is too, and a line has a peer to go to.
    let history_from = |peer| move |event: &ChatEvent| matches!(event, ChatEvent::History { peer: p, .. } if *p == peer);
    let answer = wait_for(
        &alice,
        deadline,
        "bob's history at alice",
        history_from(bob_id),
    );
    assert_eq!(
        answer,
        ChatEvent::History {
            peer: bob_id,
            lines: vec![]
        }
    );
    let answer = wait_for(
        &bob,
        deadline,
        "alice's history at bob",
        history_from(alice_id),
    );
    assert_eq!(
        answer,
        ChatEvent::History {
            peer: alice_id,
            lines: vec![]
        }
    );

    let message_from = |peer| move |event: &ChatEvent| matches!(event, ChatEvent::Message { from, .. } if *from == peer);
    bob.say("hello from bob");
    let heard = wait_for(
        &alice,
        deadline,
        "bob's line at alice",
        message_from(bob_id),
    );
    assert_eq!(
        heard,
        ChatEvent::Message {
            from: bob_id,
            text: "hello from bob".to_owned()
        }
    );
    alice.say("hi bob");
    let heard = wait_for(
        &bob,
        deadline,
        "alice's line at bob",
        message_from(alice_id),
    );
    assert_eq!(
        heard,
        ChatEvent::Message {
            from: alice_id,
            text: "hi bob".to_owned()
        }
    );

    // Bob's history holds what he said and what he heard, oldest first.
    alice.ask_history();
    let answer = wait_for(
        &alice,
        deadline,
        "bob's history, asked by hand",
        history_from(bob_id),
    );
    assert_eq!(
        answer,
        ChatEvent::History {
            peer: bob_id,
            lines: vec![
                format!("<{}> hello from bob", name(&bob_id)),
                format!("<{}> hi bob", name(&alice_id)),
            ],
        }
    );
    bob.stop();
    alice.stop();
}

/// What a peer sends is checked before it is printed or kept.
#[test]
fn lines_and_histories_from_peers_are_checked() {
    let mut payload = 7u64.to_be_bytes().to_vec();
    payload.extend_from_slice("hello".as_bytes());
    assert_eq!(decode_line(&payload), Ok("hello".to_owned()));
    // Too short, not UTF-8, a control character, too long: all refused.
    assert!(decode_line(&[1, 2, 3]).is_err());
    let mut bad = 7u64.to_be_bytes().to_vec();
    bad.extend_from_slice(&[0xff, 0xfe]);
    assert!(decode_line(&bad).is_err());
    let mut bell = 7u64.to_be_bytes().to_vec();
    bell.extend_from_slice(b"ring\x07");
    assert!(decode_line(&bell).is_err());
    let mut long = 7u64.to_be_bytes().to_vec();
    long.extend_from_slice(&[b'a'; chat::LINE_BYTES_MAX + 1]);
    assert!(decode_line(&long).is_err());

    // A history answer is cut to its bound and made printable.
    let many: Vec<String> = (0..HISTORY_LINES_MAX + 5)
        .map(|i| format!("line {i}"))
        .collect();
    let lines = decode_history(many.join("\n").as_bytes());
    assert_eq!(lines.len(), HISTORY_LINES_MAX);
    assert_eq!(lines[0], "line 0");
    assert_eq!(decode_history(b"a\x1bb"), vec!["a?b".to_owned()]);
    assert!(decode_history(b"").is_empty());
}

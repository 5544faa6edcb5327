//! The one contract every sub-machine of the node keeps.
//!
//! A sub-machine (the peer manager, the request trackers, the gossip router,
//! range sync, parent lookups) is a plain value driven from outside:
//!
//! ```text
//!   inputs ──► handle_*(now, …)      what happened: a message, a verdict, a peer leaving
//!   time   ──► handle_timeout(now)   what is due at `now`
//!   outputs ◄── poll_*()              drained until None, after every call above
//!   sleep  ◄── next_deadline()        when handle_timeout next has work
//! ```
//!
//! `Node` calls `handle_timeout` on each part in a fixed order (see
//! `Node::on_timeout`) and drains that part's `poll_*` outputs before the next
//! part runs, so what one part emits is acted on before the next decides;
//! `Node::poll_timeout` is the earliest `next_deadline` of all its parts.
//! A part never reads a clock: `now` is passed in and never goes backwards.
//! The contract follows quinn-proto's `Connection`.

use crate::time::Instant;

/// A sub-machine's time: [`Machine::handle_timeout`] does what is due, and
/// [`Machine::next_deadline`] says when that is.
pub trait Machine {
    /// Does what is due at `now`. Outputs wait in the part's `poll_*` methods.
    fn handle_timeout(&mut self, now: Instant);
    /// The earliest instant [`Machine::handle_timeout`] has work, if any.
    fn next_deadline(&self) -> Option<Instant>;
}

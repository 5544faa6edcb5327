//! What every part of the node writes to: the actions for the driver, in
//! the order they were decided, and the event counters.
//!
//! Parts receive it as an explicit argument (`out: &mut Outbox`) rather than
//! reaching into the node, so one queue keeps the order in which the parts
//! acted and no part needs another's fields to be heard.

use std::collections::VecDeque;

use crate::io::{Action, Notification};
use crate::metrics::Counters;

/// The node's output queue and counters.
#[derive(Default)]
pub(super) struct Outbox {
    /// Actions not yet taken by the driver, oldest first.
    pub(super) actions: VecDeque<Action>,
    /// Event counts since start.
    pub(super) counters: Counters,
}

impl Outbox {
    /// Queues `action` for the driver.
    pub(super) fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Queues a notification for the application.
    pub(super) fn notify(&mut self, notification: Notification) {
        self.actions.push_back(Action::Notify(notification));
    }
}

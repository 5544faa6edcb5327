//! Driving one node through the core's run-loop contract: hand it an
//! input, drain its actions and route each to the part of the world that
//! carries it out (network, modelled CPU, disk, notifications), reschedule
//! its timer, check its invariants.
//!
//! Requests given through [`Sim::request`] (or any `Command::Request`) are
//! timed into the world's [`crate::requests::RequestLog`]; notifications
//! are counted, kept per node, and handed to applications while collection
//! is on.

use meshsync_core::work::{Job, WorkId};
use meshsync_core::{Action, Command, Input, Notification};

use super::config::{
    APP_EVENTS_PENDING_MAX, NOTIFICATIONS_KEPT_PER_NODE_MAX,
    NOTIFICATION_PAYLOAD_BYTES_KEPT_PER_NODE_MAX,
};
use super::event::Event;
use super::world::Sim;
use crate::invariants::{self, NodeView};
use crate::requests::RequestOutcome;
use crate::types::{AppEvent, NodeIndex};

impl Sim {
    /// The run-loop contract: handle, drain every action, reschedule the timer,
    /// then check the node.
    pub(super) fn deliver(&mut self, index: NodeIndex, input: Input) {
        debug_assert!(self.is_up(index), "{index} is down: nothing reaches it");
        let now = self.now;
        let is_timeout = matches!(input, Input::Timeout);
        if let Input::Command(Command::Request {
            peer,
            protocol,
            tag,
            ..
        }) = &input
        {
            if !self.requests.issued(index, *tag, *peer, *protocol, now) {
                self.violation(
                    Some(index),
                    format!("the scenario reused request tag {tag} while it was open"),
                );
            }
        }
        let state = self.node_state_mut(index);
        let node_now = state.clock.node_instant(now);
        state.node.handle(node_now, input);
        while let Some(action) = self.node_state_mut(index).node.poll_action() {
            self.trace.record(index, now, &action);
            self.apply(index, action);
        }
        self.schedule_timer(index, is_timeout);
        self.check_node(index);
    }

    pub(super) fn apply(&mut self, index: NodeIndex, action: Action) {
        match action {
            Action::Dial { dial, addr } => self.apply_dial(index, dial, addr),
            Action::CancelDial { dial } => {
                if !self.node_state_mut(index).dials.remove(&dial) {
                    self.violation(
                        Some(index),
                        format!("cancelled {dial:?}, which is not in progress"),
                    );
                }
            }
            Action::Send { conn, bytes } => self.apply_send(index, conn, bytes),
            Action::Close { conn } => self.apply_close(index, conn),
            Action::Work { id, job } => self.apply_work(index, id, job),
            Action::Persist(batch) => self.apply_persist(index, batch),
            Action::ReadBlocks(read) => self.apply_read(index, read),
            Action::PersistPeers(known) => self.apply_persist_peers(index, known),
            Action::Notify(notification) => self.record_notification(index, notification),
        }
    }

    /// Runs `job` now (its output is needed to be faithful; blocks the
    /// world's chain cache knows valid are not checked twice, see
    /// [`crate::chains`]) but answers only once the node's one modelled
    /// CPU has spent [`Job::modelled_cost`] on it, after the jobs before it.
    pub(super) fn apply_work(&mut self, index: NodeIndex, id: WorkId, job: Job) {
        let now = self.now;
        let cost = job.modelled_cost();
        let output = self.config.chains.run_job(job);
        let state = self.node_state_mut(index);
        let cost = cost * state.cpu_slowdown;
        let done = state.cpu_free_at.max(now) + cost;
        state.cpu_free_at = done;
        let incarnation = state.incarnation;
        self.queue.push(
            done,
            Event::WorkDone {
                node: index,
                incarnation,
                id,
                output,
            },
        );
    }

    /// Counts `notification`, keeps it, hands it to applications if they
    /// collect, and checks what it says against what the node said before.
    pub(super) fn record_notification(&mut self, index: NodeIndex, notification: Notification) {
        let now = self.now;
        self.notification_counts.count(&notification);
        if let Notification::BlockImported { root, .. } = &notification {
            let chain = self.node_state(index).node.chain();
            if let Some(block) = chain.block_by_root(root) {
                let (proposer, slot) = (block.header.proposer_index, block.slot());
                self.check_signed_root(index, proposer, slot, *root);
            }
        }
        let state = &mut self.nodes[index.0];
        let problem = match &notification {
            Notification::PeerConnected { peer, .. } => (!state.notified_peers.insert(*peer))
                .then(|| format!("announced {peer:?} connected twice")),
            Notification::PeerDisconnected { peer, .. } => (!state.notified_peers.remove(peer))
                .then(|| format!("announced {peer:?} disconnected, but it was not connected")),
            Notification::Response { tag, chunks, .. } => {
                let outcome = RequestOutcome::Response {
                    chunks: chunks.len(),
                };
                self.requests.finished(index, *tag, now, outcome);
                None
            }
            Notification::RequestFailed { tag, error, .. } => {
                let outcome = RequestOutcome::Failed(error.clone());
                self.requests.finished(index, *tag, now, outcome);
                None
            }
            _ => None,
        };
        log::debug!("{index} at {now}: {notification:?}");
        // Payloads past their budget go oldest first, and only notifications
        // that carry one: the small ones (who connected, when) stay.
        let payload = payload_bytes(&notification);
        while state.notification_payload_bytes + payload
            > NOTIFICATION_PAYLOAD_BYTES_KEPT_PER_NODE_MAX
        {
            let Some(oldest) = state
                .notifications
                .iter()
                .position(|(_, kept)| payload_bytes(kept) > 0)
            else {
                break;
            };
            if let Some((_, dropped)) = state.notifications.remove(oldest) {
                state.notification_payload_bytes -= payload_bytes(&dropped);
            }
        }
        if state.notifications.len() == NOTIFICATIONS_KEPT_PER_NODE_MAX {
            if let Some((_, dropped)) = state.notifications.pop_front() {
                state.notification_payload_bytes -= payload_bytes(&dropped);
            }
        }
        state.notification_payload_bytes += payload;
        if self.collect_app_events {
            self.push_app_event(AppEvent::Notification {
                node: index,
                notification: notification.clone(),
            });
        }
        self.nodes[index.0]
            .notifications
            .push_back((now, notification));
        if let Some(description) = problem {
            self.violation(Some(index), description);
        }
    }

    pub(super) fn push_app_event(&mut self, event: AppEvent) {
        if self.app_events.len() == APP_EVENTS_PENDING_MAX {
            self.app_events.pop_front();
            self.violation(
                None,
                format!("{APP_EVENTS_PENDING_MAX} application events waiting: nobody takes them"),
            );
        }
        self.app_events.push_back(event);
    }

    pub(super) fn check_node(&mut self, index: NodeIndex) {
        let state = self.node_state(index);
        let problems = invariants::check_node(&NodeView {
            node: &state.node,
            peer_id: state.peer_id,
            peers_max: state.peers_max,
            notified_peers: &state.notified_peers,
        });
        for problem in problems {
            self.violation(Some(index), problem);
        }
    }
}

/// The peer bytes `notification` carries: what keeping it costs beyond its
/// fixed size.
pub(super) fn payload_bytes(notification: &Notification) -> usize {
    match notification {
        Notification::GossipMessage { payload, .. } => payload.len(),
        Notification::Response { chunks, .. } => chunks.iter().map(Vec::len).sum(),
        Notification::InboundRequest { body, .. } => body.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::SimConfig;
    use meshsync_core::gossip::{MessageId, PublishError, Topic};
    use meshsync_core::Identity;

    #[test]
    fn kept_payloads_stay_within_their_budget_and_small_notifications_stay() {
        let mut sim = Sim::new(SimConfig::new(3));
        let node = sim.add_node();
        let topic = Topic::new("blocks").expect("a valid topic");
        let small = Notification::PublishFailed {
            topic: topic.clone(),
            error: PublishError::NoPeers,
        };
        sim.record_notification(node, small.clone());
        for i in 0..5u8 {
            let message = Notification::GossipMessage {
                id: MessageId([i; 20]),
                topic: topic.clone(),
                payload: vec![i; 600 * 1024],
                from: Identity::from_seed(1).peer_id(),
            };
            sim.record_notification(node, message);
        }
        let kept: Vec<&Notification> = sim.notifications(node).map(|(_, n)| n).collect();
        let payloads: usize = kept.iter().map(|n| payload_bytes(n)).sum();
        assert!(payloads <= NOTIFICATION_PAYLOAD_BYTES_KEPT_PER_NODE_MAX);
        assert_eq!(sim.node_state(node).notification_payload_bytes, payloads);
        assert_eq!(kept.len(), 2, "the small one and the newest message");
        assert_eq!(kept[0], &small);
        assert!(matches!(
            kept[1],
            Notification::GossipMessage { id, .. } if id.0 == [4; 20]
        ));
    }
}

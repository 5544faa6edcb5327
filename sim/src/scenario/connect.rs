//! The `connect` story ([`Connect`]): strangers dial a random connected
//! topology planned by [`plan_topology`] and must all end up peers.

use meshsync_core::limits::PEERS_MAX;
use meshsync_core::{Duration, Instant};

use super::story::{Bounds, Scenario};
use super::topology::plan_topology;
use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// `connect`: nodes join a random connected topology and stay connected.
///
/// The plan: a random permutation where each node dials the one before it
/// (so the graph is connected), plus up to `extra_dials_per_node` dials per
/// node to random others, never twice between one pair and never past
/// `PEERS_MAX` at either end. Dials start at random instants in the first
/// `dial_spread`. Success, its bound: every planned dial is a peer relation
/// on both sides and the graph is connected (`Summary::fully_connected`).
#[derive(Clone, Debug)]
pub struct Connect {
    /// Random dials per node beyond the spanning path.
    pub extra_dials_per_node: usize,
    /// Dials start at uniformly random instants within this.
    pub dial_spread: Duration,
}

impl Connect {
    /// The scenario's name.
    pub const NAME: &'static str = "connect";
}

impl Default for Connect {
    fn default() -> Connect {
        Connect {
            extra_dials_per_node: 3,
            dial_spread: Duration::from_secs(1),
        }
    }
}

impl Scenario for Connect {
    fn name(&self) -> &'static str {
        Connect::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        sim.add_nodes(nodes);
        let dials = plan_topology(
            sim.scenario_rng(),
            nodes,
            self.extra_dials_per_node,
            PEERS_MAX,
        );
        // Microseconds of a spread that fits in u64 (half a million years).
        let spread_us = u64::try_from(self.dial_spread.as_micros()).unwrap_or(u64::MAX);
        for (from, to) in dials {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), spread_us.max(1)));
            sim.dial_at(at, NodeIndex(from), NodeIndex(to));
        }
    }

    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let mut bounds = Bounds::default();
        bounds.require(sim.is_fully_connected(), || {
            "a planned dial is not a peer relation on both sides, or the graph is not connected"
                .to_owned()
        });
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::story::built;

    fn world(seed: u64) -> (Connect, Sim) {
        built(Connect::default(), seed, 12)
    }

    #[test]
    fn the_bound_holds_when_every_planned_dial_is_a_peer_and_breaks_when_one_is_not() {
        let (mut scenario, mut sim) = world(5);
        scenario.run(&mut sim, Duration::from_secs(10));
        assert!(scenario.bounds_broken(&sim).is_empty());
        // A node that goes down leaves its planned relations unmade.
        let (mut scenario, mut sim) = world(5);
        sim.crash(NodeIndex(3));
        scenario.run(&mut sim, Duration::from_secs(10));
        let broken = scenario.bounds_broken(&sim);
        assert_eq!(broken.len(), 1, "{broken:?}");
    }
}

//! What every scenario is: a [`Scenario`] builds a world from a seed, runs
//! it, checks what must hold, and reports what it showed.
//!
//! A leaf among the scenarios: every story implements the trait, and the
//! registry in [`crate::scenario`] runs them through it.

use meshsync_core::Duration;

use crate::samples::Deliveries;
use crate::sim::Sim;

/// A named, seeded story about a network.
pub trait Scenario {
    /// The name the command line selects it by.
    fn name(&self) -> &'static str;

    /// Adds `nodes` nodes and plans what they will do, before the clock starts.
    fn build(&mut self, sim: &mut Sim, nodes: usize);

    /// Runs the world for `duration` of virtual time.
    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        sim.run_for(duration);
    }

    /// Checks what must hold once the run is over; failures count as
    /// invariant violations. By default: peer relations are symmetric.
    fn finish(&mut self, sim: &mut Sim) {
        sim.check_peer_symmetry();
    }

    /// What the run showed, in the scenario's own fields, for the summary's
    /// `outcome`. None by default.
    fn outcome(&self, _sim: &Sim) -> Option<serde_json::Value> {
        None
    }

    /// The bounds this run broke, one sentence each: what the scenario says
    /// must hold (its module docs), checked on what it measured. Empty when
    /// it held, and by default (a scenario that states no bound beyond the
    /// invariants, which the simulator checks itself).
    fn bounds_broken(&self, _sim: &Sim) -> Vec<String> {
        Vec::new()
    }

    /// Gossip scenarios: every delivery's latency, for `--report`'s CDF.
    /// None by default (a scenario that measures no gossip delivery).
    fn deliveries(&self) -> Option<Deliveries> {
        None
    }
}

/// The bounds a run broke, collected one [`Bounds::require`] at a time.
#[derive(Debug, Default)]
pub struct Bounds {
    broken: Vec<String>,
}

impl Bounds {
    /// Records `broken()` unless `holds`.
    pub fn require(&mut self, holds: bool, broken: impl FnOnce() -> String) {
        if !holds {
            self.broken.push(broken());
        }
    }

    /// Every bound that did not hold.
    pub fn into_broken(self) -> Vec<String> {
        self.broken
    }
}

/// `scenario`'s world of `nodes` nodes built from `seed`, for a test to
/// run and judge.
#[cfg(test)]
pub(crate) fn built<S: Scenario>(mut scenario: S, seed: u64, nodes: usize) -> (S, Sim) {
    let mut sim = Sim::new(crate::sim::SimConfig::new(seed));
    scenario.build(&mut sim, nodes);
    (scenario, sim)
}

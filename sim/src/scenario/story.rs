//! What every scenario is: a [`Scenario`] builds a world from a seed, runs
//! it, checks what must hold, and reports what it showed.
//!
//! A leaf among the scenarios: every story implements the trait, and the
//! registry in [`crate::scenario`] runs them through it.

use meshsync_core::Duration;

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
}

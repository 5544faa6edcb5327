//! Application logic on top of the simulated nodes: what a scenario's nodes
//! *want*, as opposed to what their core does.
//!
//! # Design
//! A real node runs an application beside its core: it asks peers for
//! blocks, retries elsewhere when a request fails, and a hostile one floods.
//! In the simulator that logic is an [`Application`]: it hears every
//! notification every node emits and every wake-up it asked for, each at its
//! exact virtual instant, and answers by giving nodes commands through the
//! [`Sim`]. It never touches a node directly, so the core under test is the
//! production one, driven only through its boundary.
//!
//! Wake-ups are events in the world's queue ([`Sim::wake_at`]), so an
//! application acting "every second" acts at exact instants, in the same
//! order on every machine. Notifications reach the application only while
//! [`Sim::collect_app_events`] is on, which [`run_until`] and [`run_for`]
//! switch on.
//!
//! After every step the application handles what that step produced; the
//! commands it gives may produce more (a request to a peer that is gone fails
//! at once), which it handles before the next step, until nothing is left.

use meshsync_core::Duration;

use crate::sim::Sim;
pub use crate::types::AppEvent;
use crate::types::Timeout;

/// Logic that reacts to what nodes report and to its own timers.
pub trait Application {
    /// Handles one event; may give nodes commands and ask for wake-ups.
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent);
}

/// Hands every pending event to `app`, including those its own commands cause.
pub fn react(sim: &mut Sim, app: &mut impl Application) {
    while let Some(event) = sim.take_app_event() {
        app.on_event(sim, event);
    }
}

/// Steps until `predicate` holds, at most `steps_max` steps, with `app`
/// reacting after every step (see [`Sim::run_until`]).
pub fn run_until<A: Application>(
    sim: &mut Sim,
    app: &mut A,
    mut predicate: impl FnMut(&Sim, &A) -> bool,
    steps_max: u64,
) -> Result<(), Timeout> {
    sim.collect_app_events(true);
    react(sim, app);
    let mut steps = 0;
    loop {
        if predicate(sim, app) {
            return Ok(());
        }
        if steps == steps_max {
            return Err(Timeout {
                steps,
                now: sim.now(),
                idle: false,
            });
        }
        if !sim.step() {
            return Err(Timeout {
                steps,
                now: sim.now(),
                idle: true,
            });
        }
        steps += 1;
        react(sim, app);
    }
}

/// Processes everything due within `duration`, with `app` reacting after
/// every step, and leaves the clock at its end (see [`Sim::run_for`]).
pub fn run_for(sim: &mut Sim, app: &mut impl Application, duration: Duration) {
    sim.collect_app_events(true);
    react(sim, app);
    let deadline = sim.now() + duration;
    while sim.step_until(deadline) {
        react(sim, app);
    }
    sim.run_for(deadline.saturating_duration_since(sim.now()));
}

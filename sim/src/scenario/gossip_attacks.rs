//! Attacks on the gossip mesh from the GossipSub v1.1 evaluation, each a
//! [`GossipScenario`] with Sybils (hostile nodes running the production
//! core) mixed in; the outcome carries the same fields as `gossip-1k` plus
//! the attack's own.
//!
//! | name | Sybils | what must hold |
//! | --- | --- | --- |
//! | `gossip-spam` | 20 % of nodes, ordinary cores, publish invalid messages (100/s in all) | honest nodes graylist or drop every Sybil they meet; honest delivery ≥ 99.9 % |
//! | `gossip-eclipse` | 20 % of nodes, `fault_withhold`, all dial one target first | the target receives ≥ 99 % of honest messages |
//! | `gossip-withhold` | 25 % of nodes, `fault_withhold`, mixed into the topology | honest delivery ≥ 99.9 %; p99 latency within 2× of the same world without them (run in the same invocation) |
//! | `cold-boot` | 30 % of nodes, `fault_withhold`; everyone dials at t = 0 | honest delivery ≥ 99 % once meshes settle (publishing starts 3 s in) |
//! | `slow-readers` | 10 % of nodes, ordinary cores that stop reading when publishing starts; 1 MiB messages every 2 s | delivery to the rest ≥ 99.9 %; p99 latency within 1.2× of the same world without them |
//! | `prune-flood` | 30 % of nodes at any time, `fault_prune_flood` (GRAFT, a heartbeat later PRUNE with a `u32::MAX` s backoff), each identity gone after 2 s and replaced by a fresh one; they dial only half the honest nodes, whose meshes trim above D + 1 | honest delivery ≥ 99.9 %; no honest GRAFT inside a backoff an honest peer asked for; no honest peer graylisted or lost by another; an honest node's backoffs ≤ its peers |
//!
//! Withholding Sybils (`gossip::Config::fault_withhold`) join meshes like
//! everyone else but never forward a message nor answer IWANT: they cost
//! their mesh peers a slot until the mesh delivery score (P3, after its
//! activation time) and the IHAVE promises they break push them out.
//!
//! PRUNE-flooding Sybils (`gossip::Config::fault_prune_flood`) are the
//! backoff-table attack: throwaway identities that each GRAFT their peers
//! once (crowding meshes, so honest peers get trimmed and PRUNEd with a
//! backoff) and a heartbeat later PRUNE them, asking for a `u32::MAX` s
//! backoff, and leave. Were
//! their backoffs kept past their connections, and an honest one evicted to
//! make room, honest nodes would GRAFT honest peers inside the backoff they
//! asked for and be scored down to graylist and disconnect by them. Two
//! choices make the scenario see that when it happens: the Sybils flood
//! only half the honest nodes, so the other half keep their own record of
//! every backoff they asked for and refuse (and count) a flooded node's
//! GRAFT inside it; and honest meshes trim above D + 1 instead of the core's
//! 12, so honest peers PRUNE each other all through the run and there are
//! honest backoffs to break.

use meshsync_core::gossip::router::MESH_N;
use meshsync_core::Duration;

use super::gossip::{Attack, GossipParams, GossipScenario, DELIVERY_RATIO_COLD_BOOT_MIN};

/// `gossip-spam`.
pub const SPAM: &str = "gossip-spam";
/// `gossip-eclipse`.
pub const ECLIPSE: &str = "gossip-eclipse";
/// `gossip-withhold`.
pub const WITHHOLD: &str = "gossip-withhold";
/// `cold-boot`.
pub const COLD_BOOT: &str = "cold-boot";
/// `slow-readers`.
pub const SLOW_READERS: &str = "slow-readers";
/// `prune-flood`.
pub const PRUNE_FLOOD: &str = "prune-flood";

/// How long one PRUNE-flooding identity stays before a fresh one replaces it.
pub const PRUNE_FLOOD_VISIT: Duration = Duration::from_secs(2);

/// Honest nodes the PRUNE-flooding Sybils dial, in percent: the rest keep
/// their own record of every backoff they asked for, and so witness a
/// flooded node that lost its record GRAFTing them inside it.
pub const PRUNE_FLOOD_FLOODED_PCT: u32 = 50;

/// The honest meshes' upper bound in `prune-flood`: one over D, so that a
/// mesh two over D is trimmed back to D at the next heartbeat and honest
/// peers PRUNE each other all through the run (with the core's 12 a settled
/// mesh hardly ever does): honest backoffs to keep, and to break.
pub const PRUNE_FLOOD_MESH_N_HIGH: usize = MESH_N + 1;

/// Invalid messages per second over all spamming Sybils, by default.
pub const SPAM_MESSAGES_PER_SECOND_DEFAULT: u32 = 100;

/// The honest traffic every attack runs under: 1 KiB messages, 20 publishers,
/// 10 per second in all.
fn honest_traffic() -> GossipParams {
    GossipParams {
        publishers: 20,
        ..GossipParams::small_messages()
    }
}

/// `gossip-spam` with its defaults (200 nodes).
pub fn spam() -> GossipScenario {
    GossipScenario::new(
        SPAM,
        GossipParams {
            attack: Attack::Spam {
                messages_per_second: SPAM_MESSAGES_PER_SECOND_DEFAULT,
            },
            sybils_pct: 20,
            ..honest_traffic()
        },
        200,
    )
}

/// `gossip-eclipse` with its defaults (100 nodes).
pub fn eclipse() -> GossipScenario {
    GossipScenario::new(
        ECLIPSE,
        GossipParams {
            attack: Attack::Eclipse,
            sybils_pct: 20,
            ..honest_traffic()
        },
        100,
    )
}

/// `gossip-withhold` with its defaults (200 nodes), compared with the same
/// world without Sybils.
pub fn withhold() -> GossipScenario {
    GossipScenario::new(
        WITHHOLD,
        GossipParams {
            attack: Attack::Withhold,
            sybils_pct: 25,
            compare_without_sybils: true,
            ..honest_traffic()
        },
        200,
    )
}

/// `cold-boot` with its defaults (200 nodes).
pub fn cold_boot() -> GossipScenario {
    GossipScenario::new(
        COLD_BOOT,
        GossipParams {
            attack: Attack::Withhold,
            sybils_pct: 30,
            dial_spread: Duration::ZERO,
            warmup: Duration::from_secs(3),
            delivery_ratio_min: DELIVERY_RATIO_COLD_BOOT_MIN,
            ..honest_traffic()
        },
        200,
    )
}

/// `slow-readers` with its defaults (100 nodes): a tenth of the nodes stop
/// reading when publishing starts, under block-sized traffic (1 MiB every
/// 2 s, rotating publishers), compared with the same world without them.
/// Their peers must not fall silent: each slow connection holds back only
/// itself, and is cut once it has taken nothing for `WRITE_STALL_TIMEOUT`.
pub fn slow_readers() -> GossipScenario {
    GossipScenario::new(
        SLOW_READERS,
        GossipParams {
            attack: Attack::SlowReaders,
            sybils_pct: 10,
            compare_without_sybils: true,
            ..GossipParams::blocks()
        },
        100,
    )
}

/// `prune-flood` with its defaults (200 nodes): 30 % of the nodes at any
/// time are throwaway identities that GRAFT and then PRUNE (backoff
/// `u32::MAX` s) every honest node they reach, once, and are replaced by fresh ones
/// every [`PRUNE_FLOOD_VISIT`] until publishing stops. They reach only
/// [`PRUNE_FLOOD_FLOODED_PCT`] % of the honest nodes, and honest meshes
/// trim above [`PRUNE_FLOOD_MESH_N_HIGH`].
pub fn prune_flood() -> GossipScenario {
    GossipScenario::new(
        PRUNE_FLOOD,
        GossipParams {
            attack: Attack::PruneFlood {
                visit: PRUNE_FLOOD_VISIT,
                flooded_pct: PRUNE_FLOOD_FLOODED_PCT,
            },
            sybils_pct: 30,
            mesh_n_high: Some(PRUNE_FLOOD_MESH_N_HIGH),
            ..honest_traffic()
        },
        200,
    )
}

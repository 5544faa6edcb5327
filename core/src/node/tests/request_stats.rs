//! Request statistics: our requests by protocol and result with their
//! latency in virtual time, and peers' requests by protocol and result.

use super::*;
use crate::reqresp::stats::{RequestResult, ServedResult, REQUEST_DURATION_BUCKET_BOUNDS_MICROS};

#[test]
fn a_status_and_a_range_round_trip_count_as_ok_with_the_time_that_elapsed() {
    let mut net = Net::new(vec![chain_config(0), chain_config(100)]);
    net.dial(0, 1, None);
    // The Status exchange on connect crosses a link without latency.
    let status = net.nodes[0]
        .request_stats()
        .protocol(&ProtocolId::Status)
        .cloned()
        .expect("a Status request ended");
    assert_eq!(status.count(RequestResult::Ok), 1, "{status:?}");
    assert_eq!(status.duration.count, 1);
    assert_eq!(status.duration.sum_micros, 0);
    assert_eq!(status.duration.buckets[0], 1);

    // Node 0 reads nothing for 1.234 s: the answer waits that long.
    net.set_slow_reader(0, true);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 4,
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRange, body, 1);
    assert!(outcome(&net, 0, 1).is_none());
    net.advance(Duration::from_millis(1_234));
    net.set_slow_reader(0, false);
    net.drain();
    assert!(matches!(
        outcome(&net, 0, 1),
        Some(Notification::Response { .. })
    ));
    let range = net.nodes[0]
        .request_stats()
        .protocol(&ProtocolId::BlocksByRange)
        .cloned()
        .expect("a range request ended");
    assert_eq!(range.count(RequestResult::Ok), 1, "{range:?}");
    assert_eq!(range.results.iter().sum::<u64>(), 1, "{range:?}");
    assert_eq!(range.duration.count, 1);
    assert_eq!(range.duration.sum_micros, 1_234_000);
    // 1.234 s is in the bucket bounded by 2 s.
    let bucket = REQUEST_DURATION_BUCKET_BOUNDS_MICROS
        .iter()
        .position(|&bound| bound == 2_000_000)
        .unwrap();
    assert_eq!(range.duration.buckets[bucket], 1, "{range:?}");
    // The server counts it answered, by protocol.
    let served = net.nodes[1].served_stats();
    assert_eq!(
        served.count(&ProtocolId::BlocksByRange, ServedResult::Answered),
        1
    );
    assert_eq!(served.count(&ProtocolId::Status, ServedResult::Answered), 1);
}

#[test]
fn a_request_that_runs_out_of_time_counts_as_timed_out_without_a_latency() {
    let mut silent = chain_config(100);
    silent.faults.never_answer_requests = true;
    let mut net = Net::new(vec![chain_config(0), silent]);
    net.dial(0, 1, None);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 8,
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRange, body, 1);
    net.advance(Duration::from_secs(6));
    assert!(matches!(
        outcome(&net, 0, 1),
        Some(Notification::RequestFailed {
            error: RequestError::FirstChunkTimeout,
            ..
        })
    ));
    let range = net.nodes[0]
        .request_stats()
        .protocol(&ProtocolId::BlocksByRange)
        .cloned()
        .expect("a range request ended");
    assert_eq!(range.count(RequestResult::TimedOut), 1, "{range:?}");
    assert_eq!(range.count(RequestResult::Ok), 0, "{range:?}");
    assert_eq!(range.duration.count, 0, "{range:?}");
    // The server never answered: it counts the request expired.
    net.advance(Duration::from_secs(10));
    let expired = net.nodes[1]
        .served_stats()
        .count(&ProtocolId::BlocksByRange, ServedResult::Expired);
    assert_eq!(expired, 1);
}

#[test]
fn rate_limited_requests_are_counted_by_protocol() {
    let mut hostile = chain_config(0);
    hostile.faults.ignore_peer_quotas = true;
    let mut net = Net::new(vec![chain_config(100), hostile]);
    net.dial(1, 0, None);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 64,
    }
    .encode();
    for tag in 0..50 {
        request(&mut net, 1, 0, ProtocolId::BlocksByRange, body.clone(), tag);
    }
    let counters = net.nodes[0].counters().clone();
    let served = net.nodes[0].served_stats();
    let limited = served.count(&ProtocolId::BlocksByRange, ServedResult::RateLimited)
        + served.count(&ProtocolId::BlocksByRange, ServedResult::OverBudget);
    assert!(limited >= 10, "{served:?}");
    // Only range requests were refused, and the totals agree.
    assert_eq!(limited, counters.requests_rate_limited, "{served:?}");
    // The requester sees them as refused busy.
    let refused = net.nodes[1]
        .request_stats()
        .protocol(&ProtocolId::BlocksByRange)
        .map_or(0, |stats| stats.count(RequestResult::ResourceUnavailable));
    assert_eq!(refused, limited);
}

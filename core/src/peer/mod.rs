//! The peer manager: scores, bans, rate limits, connection gating (being written).

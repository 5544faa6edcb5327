//! Gossip: a gossipsub v1.1/v1.2-style mesh (being written).

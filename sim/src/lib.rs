//! meshsync-sim (being written).

//! meshsync-mio (being written).

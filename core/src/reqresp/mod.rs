//! Request/response protocols (being written).

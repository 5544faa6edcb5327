//! Fuzz entry points for the sync machines.

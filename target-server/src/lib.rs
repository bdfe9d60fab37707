//! stampede-target (being written).

//! stampede-agent (being written).

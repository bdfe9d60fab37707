//! Outcome classes of a connect attempt (DESIGN.md "Outcome classes", KERNEL.md §4).

//! `kbs apply`'s phases: each says what it would change, changes only that, and can run again.

pub mod journal;

//! One integration-test binary (linked once); a module per area.

mod common;
mod inventory_errors;
mod plan;

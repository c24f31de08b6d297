//! Tests against the Docker lab (tests/lab), added once the lab exists.

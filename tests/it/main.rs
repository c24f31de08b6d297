//! One integration-test binary (one link). Each module checks kbs's output with the real tool
//! that will consume it: openssl, an etcd cluster, the kbs binary itself.

mod pki_common;
mod etcd;
mod pki;
mod tls;

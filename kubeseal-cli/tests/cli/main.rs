//! `kubeseal` end to end: the built binary, a certificate made at test time, and every result
//! opened with the matching private key through `mooring_sealing`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod help;
mod merge;
mod raw;
mod recovery;
mod seal;
mod support;

//! Support for mooring's end-to-end tests against the real peers started by `tests/realenv/up`.
//!
//! - [`RealEnv::load`] reads `target/realenv/env.sh` (addresses, credentials, CA paths);
//! - [`RealEnv::admin_client`] is a kube client with cluster-admin rights;
//! - [`TestNamespace`] is a namespace per test, deleted when it is dropped;
//! - [`wait_for`] polls a condition with a bound;
//! - [`TestNamespace::service_account_client`] acts as a fresh ServiceAccount (TokenRequest);
//! - [`RunningAgent`] runs the agent in-process, [`AgentProcess`] as the built binary;
//! - [`GitRepo`] is a repository of a test's own, [`TestHost`] a network namespace of its own;
//! - [`external_secrets`] creates stores and ExternalSecrets and waits for their conditions;
//! - [`gitops`] writes Application manifests and waits for their status;
//! - [`webhook`] signs Git hosts' webhook payloads;
//! - [`workloads`] knows the kwok Nodes that make pods run, complete or fail.
//!
//! A missing environment is an error, never a skip: the suite runs against real peers or fails.

mod agent;
mod door;
mod env;
pub mod external_secrets;
mod git;
pub mod gitops;
mod host;
mod namespace;
mod process;
mod wait;
pub mod webhook;
pub mod workloads;

pub use agent::{RunningAgent, agent, scrape};
pub use door::Door;
pub use env::{RealEnv, token_kubeconfig};
pub use git::{GitRepo, git};
pub use host::TestHost;
pub use namespace::TestNamespace;
pub use process::{AgentProcess, binary, free_port};
pub use wait::wait_for;

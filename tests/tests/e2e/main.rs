//! mooring end to end, against the real peers of `tests/realenv/up`: one module per area, all in
//! one test binary so the agent (with gix, vaultrs and the AWS SDK) is linked once, not once
//! per file. Run one area with `cargo test -p mooring-e2e --test e2e -- <module>::`.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply;
mod apply_paging;
mod aws_support;
mod bombs;
mod demo;
mod external_secrets;
mod external_secrets_aws;
mod external_secrets_azure;
mod external_secrets_tls;
mod git;
mod git_holes;
mod gitops;
mod golden;
mod ha;
mod holes;
mod hooks;
mod install;
mod jsonnet;
mod kubeseal;
mod metrics;
mod migration;
mod migration_argocd;
mod migration_eso;
mod provider_aws;
mod provider_conformance;
mod rbac;
mod render_sandbox;
mod sealed_secrets;
mod smoke;
mod split;
mod tenancy;
mod webhook;
mod workloads;

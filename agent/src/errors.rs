//! How errors are printed: once, with their causes.

/// An error and its sources on one line: "a: b: c". Errors are printed once, here. A cause
/// whose text its parent already shows is left out: some libraries' errors (kube's among them)
/// print their cause and also return it as their source.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = describe(error);
    let mut parent = text.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = describe(cause);
        if !parent.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        parent = shown;
        source = cause.source();
    }
    text
}

/// One error's own text. The API server's refusal is its message, as `kubectl` prints it: kube
/// formats it as `ApiError: <message>: <reason> (<the whole Status, debug-printed>)`.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(kube::Error::Api(status)) = error.downcast_ref::<kube::Error>()
        && !status.message.is_empty()
    {
        return status.message.clone();
    }
    // The Status is also the Api error's source: shown as its message, it is left out above.
    let status = error.downcast_ref::<kube::core::Status>().or_else(|| {
        error
            .downcast_ref::<Box<kube::core::Status>>()
            .map(|b| &**b)
    });
    if let Some(status) = status
        && !status.message.is_empty()
    {
        return status.message.clone();
    }
    error.to_string()
}

/// Fails when an error of `error`'s chain also prints its own cause: [`error_chain`] appends
/// every cause, so a message that formats its `#[source]` shows it twice.
#[cfg(test)]
pub(crate) fn assert_each_cause_printed_once(error: &(dyn std::error::Error + 'static)) {
    let mut current = error;
    while let Some(cause) = current.source() {
        let (outer, inner) = (current.to_string(), cause.to_string());
        assert!(
            inner.is_empty() || !outer.contains(&inner),
            "{outer:?} prints its cause {inner:?}, and error_chain prints it again: {:?}",
            error_chain(error)
        );
        current = cause;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::git::{GitError, StorageStep};
    use crate::gitops::render::{Glob, RenderError};
    use crate::sealed_secrets::controller::Error as SealedSecretError;

    #[test]
    fn the_chain_joins_each_cause_once() {
        let error = GitError::Storage {
            step: StorageStep::Write,
            path: "cache/file".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(error_chain(&error), "failed to write cache/file: disk full");
    }

    /// An error that prints its cause and returns it as its source too, as kube's do.
    #[derive(Debug, thiserror::Error)]
    #[error("api error: {0}")]
    struct PrintsItsSource(#[source] std::io::Error);

    #[test]
    fn a_cause_the_parent_already_prints_is_left_out() {
        let error = GitError::ReadKnownHosts {
            config_map: "ns/hosts".into(),
            source: kube::Error::Service(Box::new(PrintsItsSource(std::io::Error::other(
                "refused",
            )))),
        };
        assert_eq!(
            error_chain(&error),
            "failed to read the ssh known_hosts ConfigMap ns/hosts: ServiceError: api error: refused"
        );
    }

    #[test]
    fn errors_outside_the_controllers_print_each_cause_once() {
        let glob = RenderError::InvalidGlob {
            field: "include",
            pattern: "[".into(),
            source: Glob::new("[").expect_err("an unclosed class is not a glob"),
        };
        let unseal = SealedSecretError::Unseal {
            source: mooring_sealing::secret::UnsealError::BothDataFormats,
            reason: "ConflictingData",
            sealed_for: None,
        };
        let storage = GitError::Storage {
            step: StorageStep::PrepareSsh,
            path: "cache/entry".into(),
            source: std::io::Error::other("permission denied"),
        };
        let errors: [&dyn std::error::Error; 3] = [&glob, &unseal, &storage];
        for error in errors {
            assert_each_cause_printed_once(error);
        }
    }
}

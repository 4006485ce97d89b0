//! Writes `crds/manifests/` from the Rust types: `cargo run -p mooring-crds --bin crdgen`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let result = mooring_crds::manifests()
        .map_err(|error| error.to_string())
        .and_then(|files| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
            for file in files {
                let path = dir.join(&file.file_name);
                std::fs::write(&path, file.yaml)
                    .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

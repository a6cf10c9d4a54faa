//! `weir keys create`: a new key, shown once. Only its digest goes in the
//! keys file, so the file grants access without holding a usable secret.

use crate::args::{KeyAction, KeysArgs};
use crate::failure::{Failure, Outcome};
use weir_shared::config::auth::{file_line, generate_key, validate_tenant};

/// Runs `weir keys`.
pub fn run(args: KeysArgs) -> Outcome {
    match args.action {
        KeyAction::Create { tenant, admin } => {
            validate_tenant(&tenant).map_err(|e| Failure::usage(format!("--tenant: {e}")))?;
            let key = generate_key();
            // Line 1: the key (shown once); line 2: the line for the keys file.
            println!("{key}");
            println!("{}", file_line(&tenant, &key, admin));
            eprintln!(
                "The first line is the key, shown only now: clients send it as `Authorization: Bearer KEY`.\n\
                 The second line goes in the file named by WEIR_API_KEYS_FILE."
            );
            Ok(())
        }
    }
}

//! What the callgrind bench binaries (`callpath`, `msgpath`) share: their arguments
//! (`LIBRARY N [more]`) and the 1-worker runtime they count on (callgrind serialises
//! threads anyway, and a second worker would add its spinning to the count).

use std::path::PathBuf;

/// The library, N, and any further arguments; exits with status 2 and the usage line on
/// stderr when they are missing or N is not a number.
pub fn args(bin: &str, usage: &str) -> (PathBuf, u64, Vec<String>) {
    let mut args = std::env::args().skip(1);
    let (Some(lib), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: {bin} {usage}");
        std::process::exit(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("{bin}: N must be a number, not {n:?}");
        std::process::exit(2);
    };
    (PathBuf::from(lib), n, args.collect())
}

/// A multi-thread tokio runtime with one worker.
pub fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

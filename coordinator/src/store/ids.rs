//! Timestamps and fresh identifiers (lease, worker, checkpoint ids) the store and the
//! scheduler mint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random identifier (lease ids, worker ids) without an RNG dependency: std's hasher is
/// seeded randomly per process, and mixing in time and a counter makes each call unique.
pub fn random_id(prefix: &str) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos(),
    );
    format!("{prefix}{:016x}", h.finish())
}

/// A short digest of a lease id, for logs and messages: a lease id is a secret (whoever knows
/// it, and the worker id it was granted to, can report under it), its digest is not.
pub fn lease_digest(lease_id: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(lease_id.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

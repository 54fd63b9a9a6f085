//! Who a worker is, beyond its id: the client certificate it registered with under mutual
//! TLS. A worker id is bound to that certificate for good, so a second machine that learns a
//! worker id and a lease id (from a log line, from plaintext traffic) still cannot report
//! under them. The binding never changes once registered, so it is cached here and checked
//! before a transition rather than inside it; which worker holds a lease does change, and is
//! checked inside the transition (`fencing`).

use std::collections::HashMap;
use std::sync::Mutex;

use advsweep_core::RunId;

use super::fencing;
use crate::store::error::StoreError;

/// Most worker ids whose certificate is cached (each registration adds one; the cache starts
/// over, and refills from the store, past this).
const CACHED: usize = 100_000;

/// Worker id → the certificate it registered with (`None`: none).
#[derive(Debug, Default)]
pub(super) struct Certificates(Mutex<HashMap<String, Option<String>>>);

impl Certificates {
    pub(super) fn get(&self, worker_id: &str) -> Option<Option<String>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(worker_id)
            .cloned()
    }

    pub(super) fn remember(&self, worker_id: &str, cert: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHED {
            map.clear();
        }
        map.insert(worker_id.to_owned(), cert);
    }
}

/// Fails when the worker registered with a certificate and the caller presents another (or
/// none).
pub(super) fn check_certificate(
    registered: Option<&str>,
    presented: Option<&str>,
    worker_id: &str,
    run_id: Option<&RunId>,
) -> Result<(), StoreError> {
    match registered {
        Some(cert) if presented != Some(cert) => Err(fencing::not_holder(
            run_id,
            worker_id,
            "the call's client certificate is not the one this worker registered with",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_bound_to_its_certificate() {
        let r = RunId::new("r-0000000000000001").expect("a run id");
        let r = Some(&r);
        assert!(check_certificate(Some("aa"), Some("aa"), "w", r).is_ok());
        assert!(check_certificate(Some("aa"), Some("bb"), "w", r).is_err());
        assert!(check_certificate(Some("aa"), None, "w", r).is_err());
        // Registered without one (no mutual TLS then): not bound.
        assert!(check_certificate(None, Some("bb"), "w", r).is_ok());
        assert!(check_certificate(None, None, "w", r).is_ok());
    }
}

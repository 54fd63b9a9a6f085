//! Who is calling, as far as the connection tells: the peer address (for rate-limited refusal
//! logs) and the client certificate's identity under mutual TLS (the SHA-256 of the leaf
//! certificate's DER, which a worker id is bound to at registration).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::Request;

/// What the connection says about a call's sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub peer: Option<SocketAddr>,
    /// SHA-256 (hex) of the client certificate's DER, when one was presented.
    pub cert_sha256: Option<String>,
}

impl Caller {
    pub fn of<T>(request: &Request<T>) -> Caller {
        let cert_sha256 = request.peer_certs().and_then(|certs| {
            certs.first().map(|leaf| {
                Sha256::digest(leaf.as_ref())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
        });
        Caller {
            peer: request.remote_addr(),
            cert_sha256,
        }
    }

    pub fn cert(&self) -> Option<&str> {
        self.cert_sha256.as_deref()
    }
}

/// How often one peer's refusals of one kind are logged.
const EVERY: Duration = Duration::from_secs(10);
/// Most peers remembered (the table starts over past this: a flood of addresses costs log
/// lines, not memory).
const PEERS: usize = 4096;

/// Rate-limits a kind of WARN line per peer: the first refusal of a peer is logged, the ones
/// within [`EVERY`] after it are counted and reported with the next line logged.
#[derive(Debug, Default)]
pub struct RateLimit(Mutex<HashMap<Option<IpAddr>, (Instant, u64)>>);

impl RateLimit {
    /// `Some(n)` when this event should be logged now, `n` being how many were suppressed
    /// since the last line for this peer; `None` when it is suppressed.
    pub fn admit(&self, peer: Option<SocketAddr>) -> Option<u64> {
        let key = peer.map(|p| p.ip());
        let now = Instant::now();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= PEERS && !seen.contains_key(&key) {
            seen.clear();
        }
        match seen.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < EVERY => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_refusals_of_a_peer_are_counted_not_logged() {
        let limit = RateLimit::default();
        let a: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        assert_eq!(limit.admit(Some(a)), Some(0));
        assert_eq!(limit.admit(Some(a)), None);
        assert_eq!(limit.admit(Some(a)), None);
        assert_eq!(limit.admit(Some(b)), Some(0));
    }
}

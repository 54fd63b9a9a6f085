//! Checks on every field a client or worker sends, before it reaches the store or the disk.
//!
//! The coordinator listens on a shared cluster network, so nothing in a request is trusted: each
//! field is checked here and a bad one is refused with `INVALID_ARGUMENT` naming the field, the
//! value (cut to 64 bytes) and what is allowed. The rules:
//!
//! * **Content ids** (sweep `s-`, run `r-`, cell `c-`): exactly the prefix and 16 lowercase hex
//!   digits that `sweep::ids` makes, parsed here into their types ([`run_id`], [`cell_id`],
//!   [`sweep_id`]: `advsweep_core::ids`), the only form the scheduler and the store accept. A
//!   run id names a directory under `<state-dir>/artifacts/`, so this shape is also what keeps
//!   uploads inside the state directory (no `/`, `..`, NUL, absolute paths).
//! * **Opaque ids** the coordinator handed out (worker `w-`, lease `l-`, checkpoint `k-`):
//!   1–[`MAX_ID_BYTES`] printable ASCII characters (a lease id parsed into a `LeaseId`,
//!   [`lease_id`]); they only ever reach SQL as parameters. An unknown one is the store's
//!   business (`UNAUTHENTICATED`, `FAILED_PRECONDITION`, `NOT_FOUND`).
//! * **Labels** (worker name, hostname, device, version): at most [`MAX_LABEL_BYTES`], no control
//!   or bidi characters — refused otherwise, since they identify a worker in `status` and logs.
//! * **Free text** (failure and release reasons): cut to [`MAX_REASON_BYTES`] and control
//!   characters other than newline and tab replaced, never refused — a worker must always be able
//!   to report that it failed, however long its error.
//! * **Counts and sizes** (slots, epochs per report, cell ids per retry, overrides): bounded
//!   below, with the bound in the message.
//!
//! Every message built here is itself bounded ([`invalid`]), so an error never echoes a
//! megabyte back into a gRPC header.

use advsweep_core::validate::{self, hides_text};
use advsweep_core::wire::WireError;
use advsweep_core::{CellId, InvalidId, LeaseId, RunId, SweepId};
use advsweep_proto::v1 as pb;
use tonic::Status;

use crate::store::LeaseRef;

/// Longest opaque id accepted (the vocabulary's id rule, `advsweep_core::validate::id`).
pub use advsweep_core::limits::MAX_ID_BYTES;
/// Longest worker name, hostname, device or version.
pub const MAX_LABEL_BYTES: usize = 256;
/// Failure and release reasons are cut to this many bytes.
pub const MAX_REASON_BYTES: usize = 4096;
/// Longest message of a status we return.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4096;
/// Most runs one worker may say it executes at once.
pub const MAX_SLOTS: u32 = 1024;
/// Most epochs in one `ReportMetrics` call.
pub const MAX_EPOCHS_PER_REPORT: usize = 10_000;
/// Most cells in one `CompleteCells` call.
pub const MAX_CELLS_PER_REPORT: usize = 10_000;
/// Most cell ids named in one `RetrySweep` call.
pub const MAX_RETRY_CELL_IDS: usize = 100_000;
/// Most entries in `SubmitSweepRequest.overrides`.
pub const MAX_OVERRIDES: usize = 16;

/// `value` cut to at most `max` bytes at a character boundary.
pub fn cut(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A value for an error message: quoted and escaped, at most 64 bytes of it.
pub fn shown(value: &str) -> String {
    validate::shown(value, 64)
}

/// `INVALID_ARGUMENT` with a message of at most [`MAX_STATUS_MESSAGE_BYTES`].
pub fn invalid(message: impl AsRef<str>) -> Status {
    let message = message.as_ref();
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        Status::invalid_argument(message)
    } else {
        Status::invalid_argument(format!("{}…", cut(message, MAX_STATUS_MESSAGE_BYTES)))
    }
}

/// A wire decoding error (it names its field).
pub fn wire_error(e: WireError) -> Status {
    invalid(e.to_string())
}

/// An opaque id: non-empty, at most [`MAX_ID_BYTES`], printable ASCII without spaces (the
/// vocabulary's one id rule).
pub fn require_id(field: &'static str, value: &str) -> Result<(), Status> {
    validate::id(field, value).map_err(wire_error)
}

/// What a content id identifies, and its shape (`advsweep_core::ids`, the one `sweep::ids`
/// makes).
pub use advsweep_core::ids::ContentId;

/// A content-hash id of `kind`: its prefix and 16 lowercase hex digits, nothing else.
pub fn require_content_id(field: &str, value: &str, kind: ContentId) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(format!("missing field `{field}`")));
    }
    if !kind.matches(value) {
        return Err(invalid(format!(
            "field `{field}` = {} is not a {} id (`{}` and 16 lowercase hex digits)",
            shown(value),
            kind.what(),
            kind.prefix()
        )));
    }
    Ok(())
}

/// A content id of `kind`, checked as [`require_content_id`] checks it, as its typed id.
fn content_id<T>(field: &str, value: &str, kind: ContentId) -> Result<T, Status>
where
    T: TryFrom<String, Error = InvalidId>,
{
    require_content_id(field, value, kind)?;
    // The shape was checked just above; the type checks the same shape.
    T::try_from(value.to_owned()).map_err(|e| invalid(format!("field `{field}`: {e}")))
}

/// A run id (`r-`…), parsed: [`require_content_id`]'s refusal naming `field` otherwise.
pub fn run_id(field: &str, value: &str) -> Result<RunId, Status> {
    content_id(field, value, ContentId::Run)
}

/// A cell id (`c-`…), parsed: [`require_content_id`]'s refusal naming `field` otherwise.
pub fn cell_id(field: &str, value: &str) -> Result<CellId, Status> {
    content_id(field, value, ContentId::Cell)
}

/// A sweep id (`s-`…), parsed: [`require_content_id`]'s refusal naming `field` otherwise.
pub fn sweep_id(field: &str, value: &str) -> Result<SweepId, Status> {
    content_id(field, value, ContentId::Sweep)
}

/// A lease id, parsed: [`require_id`]'s refusal naming `field` otherwise.
pub fn lease_id(field: &'static str, value: &str) -> Result<LeaseId, Status> {
    require_id(field, value)?;
    // The rule was checked just above; the type checks the same rule.
    LeaseId::new(value).map_err(|e| invalid(format!("field `{field}`: {e}")))
}

/// A label: at most [`MAX_LABEL_BYTES`], no control or bidi characters (may be empty).
pub fn require_label(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_LABEL_BYTES {
        return Err(invalid(format!(
            "field `{field}` is {} bytes, more than {MAX_LABEL_BYTES}: {}",
            value.len(),
            shown(value)
        )));
    }
    if value.chars().any(hides_text) {
        return Err(invalid(format!(
            "field `{field}` = {} contains control or bidi characters",
            shown(value)
        )));
    }
    Ok(())
}

/// A reason as stored: at most [`MAX_REASON_BYTES`] (cut at a character boundary, marked with
/// `…`), control characters other than newline and tab replaced by U+FFFD.
pub fn clean_reason(value: &str) -> String {
    let mut out: String = cut(value, MAX_REASON_BYTES)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    if value.len() > MAX_REASON_BYTES {
        out.push('…');
    }
    out
}

/// At most `max` items in the repeated field `field`.
pub fn require_count(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(invalid(format!(
            "field `{field}` has {len} entries, more than {max}"
        )));
    }
    Ok(())
}

/// A SHA-256 as 64 hex digits (either case); returned lowercase.
pub fn require_sha256(field: &str, value: &str) -> Result<String, Status> {
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "field `{field}` = {} is not a SHA-256 (64 hex digits)",
            shown(value)
        )));
    }
    Ok(value.to_ascii_lowercase())
}

/// The lease a worker quotes: its worker and lease ids, a run id and an attempt ≥ 1.
pub fn lease_ref(lease: Option<pb::LeaseRef>) -> Result<LeaseRef, Status> {
    let lease = lease.ok_or_else(|| invalid("missing field `lease`"))?;
    require_id("lease.worker_id", &lease.worker_id)?;
    let run_id = run_id("lease.run_id", &lease.run_id)?;
    let lease_id = lease_id("lease.lease_id", &lease.lease_id)?;
    if lease.attempt == 0 {
        return Err(invalid("field `lease.attempt` must be at least 1, got 0"));
    }
    Ok(LeaseRef {
        worker_id: lease.worker_id,
        run_id,
        lease_id,
        attempt: lease.attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_have_exactly_the_shape_ids_gives_them() {
        let run = "r-0123456789abcdef";
        assert!(require_content_id("run_id", run, ContentId::Run).is_ok());
        for bad in [
            "",
            "r-0123456789abcde",
            "r-0123456789abcdef0",
            "r-0123456789ABCDEF",
            "s-0123456789abcdef",
            "r-../../../etc/pwd",
            "/etc/passwd",
            "..",
            "r-0123456789abcde\0",
        ] {
            let e = require_content_id("lease.run_id", bad, ContentId::Run)
                .expect_err("must be refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("lease.run_id"), "{}", e.message());
        }
    }

    #[test]
    fn messages_name_the_field_and_cut_the_value() {
        let huge = "x".repeat(1 << 20);
        let e = require_id("worker_id", &huge).expect_err("too long");
        assert!(e.message().contains("worker_id"));
        assert!(e.message().len() < 400, "{}", e.message().len());
        let e = require_label("hostname", "a\u{1b}[31mred").expect_err("control");
        assert!(e.message().contains("hostname"));
        // Right-to-left override: `worker-\u{202E}gpj.exe` would read as `worker-exe.jpg`.
        let e = require_label("name", "worker-\u{202E}gpj.exe").expect_err("bidi");
        assert!(e.message().contains("name"), "{}", e.message());
        assert!(
            require_label("name", "wörker-ü").is_ok(),
            "other Unicode is fine"
        );
        assert!(invalid(&huge).message().len() <= MAX_STATUS_MESSAGE_BYTES + 3);
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary_and_cleaned() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cleaned = clean_reason(&long);
        assert!(cleaned.len() <= MAX_REASON_BYTES + '…'.len_utf8());
        assert!(cleaned.ends_with('…'));
        assert_eq!(clean_reason("a\nb\tc\u{7}d"), "a\nb\tc\u{fffd}d");
    }

    #[test]
    fn sha256_is_64_hex_digits() {
        let ok = "A".repeat(64);
        assert_eq!(require_sha256("sha256", &ok).expect("ok"), "a".repeat(64));
        for bad in [
            "",
            "g".repeat(64).as_str(),
            "a".repeat(63).as_str(),
            "é".repeat(32).as_str(),
        ] {
            assert!(require_sha256("sha256", bad).is_err(), "{bad:?}");
        }
    }
}

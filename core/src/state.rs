//! The lifecycle states of runs, cells, attempts and sweeps, and their one text form.
//!
//! The store keeps states as SQL text, the wire carries them as strings (v1), and people read
//! them in `status`, reports and exports. Every one of those goes through the mappings here
//! (`as_str` / `parse`), so a state's spelling exists exactly once; the same holds for the one
//! derived state people see, *running* (a pending cell, or a run, whose run is leased).

use std::fmt;

/// A state's text was none of the known spellings (a state directory written by a newer
/// build, or a corrupted row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state `{text}` (known: {known})")]
pub struct UnknownState {
    pub kind: &'static str,
    pub text: String,
    pub known: String,
}

/// Defines a state enum with its one spelling per variant, `ALL`, `as_str`, `parse`,
/// `Display` and `FromStr`.
macro_rules! states {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one spelling: stored in SQL, sent on the wire, shown to people.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The state spelled `text`, or an error naming the known spellings.
            pub fn parse(text: &str) -> Result<$name, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        kind: $kind,
                        text: text.to_owned(),
                        known: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(text: &str) -> Result<$name, UnknownState> {
                $name::parse(text)
            }
        }
    };
}

states! {
    /// The durable state of a run (one training job). See ARCHITECTURE.md for the transitions.
    RunState, "run" {
        /// Waiting for a worker (possibly until its back-off ends).
        Pending = "pending",
        /// Held by a worker under a lease.
        Leased = "leased",
        Done = "done",
        /// Out of attempts, or failed with a non-retryable error.
        Failed = "failed",
        /// No active sweep needs it any more.
        Cancelled = "cancelled",
    }
}

states! {
    /// The durable state of a cell (one evaluation of a run's trained weights).
    CellState, "cell" {
        Pending = "pending",
        /// Its result is stored.
        Done = "done",
        /// Its run failed, or the worker finished the run without reporting it.
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

states! {
    /// What people see for a run or a cell: the durable state, with *running* for pending work
    /// whose run is leased (and for a leased run itself).
    ShownState, "shown" {
        Pending = "pending",
        Running = "running",
        Done = "done",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

states! {
    /// How one attempt at a run ended (the `attempts` table).
    AttemptOutcome, "attempt outcome" {
        /// The worker completed the run.
        Done = "done",
        /// The worker reported a failure.
        Failed = "failed",
        /// The lease expired without a heartbeat.
        Expired = "expired",
        /// The worker handed the run back (shutdown, preemption): no penalty.
        Preempted = "preempted",
    }
}

states! {
    /// A sweep's state, derived from its cells (see [`StateCounts::sweep_state`]).
    SweepState, "sweep" {
        /// Some cell is pending or running.
        Running = "running",
        Done = "done",
        /// Settled with at least one failed cell.
        Failed = "failed",
        /// Cancelled with work left.
        Cancelled = "cancelled",
    }
}

impl RunState {
    /// Whether a worker may still take or hold the run.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Pending | RunState::Leased)
    }

    /// The state people see.
    pub fn shown(self) -> ShownState {
        match self {
            RunState::Pending => ShownState::Pending,
            RunState::Leased => ShownState::Running,
            RunState::Done => ShownState::Done,
            RunState::Failed => ShownState::Failed,
            RunState::Cancelled => ShownState::Cancelled,
        }
    }
}

impl CellState {
    /// The state people see for this cell of a run in state `run`: a pending cell of a leased
    /// run is *running*. The one place that derivation is written.
    pub fn shown(self, run: RunState) -> ShownState {
        match (self, run) {
            (CellState::Pending, RunState::Leased) => ShownState::Running,
            (CellState::Pending, _) => ShownState::Pending,
            (CellState::Done, _) => ShownState::Done,
            (CellState::Failed, _) => ShownState::Failed,
            (CellState::Cancelled, _) => ShownState::Cancelled,
        }
    }
}

impl SweepState {
    /// Whether the sweep has settled (nothing pending or running).
    pub fn is_terminal(self) -> bool {
        self != SweepState::Running
    }
}

/// Counts by shown state (runs or cells).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub pending: u32,
    pub running: u32,
    pub done: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl StateCounts {
    pub fn total(&self) -> u32 {
        self.pending + self.running + self.done + self.failed + self.cancelled
    }

    /// Nothing left to do (no pending or running work).
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.running == 0
    }

    /// Counts `n` more in `state`.
    pub fn add(&mut self, state: ShownState, n: u32) {
        match state {
            ShownState::Pending => self.pending += n,
            ShownState::Running => self.running += n,
            ShownState::Done => self.done += n,
            ShownState::Failed => self.failed += n,
            ShownState::Cancelled => self.cancelled += n,
        }
    }

    /// The counts of `states`.
    pub fn of(states: impl IntoIterator<Item = ShownState>) -> StateCounts {
        let mut counts = StateCounts::default();
        for state in states {
            counts.add(state, 1);
        }
        counts
    }

    /// The state of a sweep with these cell counts, `cancelled` when the sweep was cancelled:
    /// cancelled while work is left (cells another active sweep shares keep running) or when
    /// settled with any cell cancelled, whether or not the flag is still set (a sweep with
    /// cancelled cells never reads as done); else running while any cell is pending or
    /// running, else failed if any failed, else done (a cancelled sweep whose shared cells all
    /// finished has every result: done).
    pub fn sweep_state(&self, cancelled: bool) -> SweepState {
        if (cancelled && !self.settled()) || (self.settled() && self.cancelled > 0) {
            SweepState::Cancelled
        } else if !self.settled() {
            SweepState::Running
        } else if self.failed > 0 {
            SweepState::Failed
        } else {
            SweepState::Done
        }
    }
}

/// Serialization as the spelling, for each state enum (no comparison with text: compare typed
/// values, or `as_str()` at the wire's edge).
macro_rules! state_text {
    ($($name:ident),+) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )+};
}

state_text!(RunState, CellState, ShownState, AttemptOutcome, SweepState);

impl StateCounts {
    /// The count of `state`.
    pub fn get(&self, state: ShownState) -> u32 {
        match state {
            ShownState::Pending => self.pending,
            ShownState::Running => self.running,
            ShownState::Done => self.done,
            ShownState::Failed => self.failed,
            ShownState::Cancelled => self.cancelled,
        }
    }

    /// Work that has settled: done, failed or cancelled.
    pub fn finished(&self) -> u32 {
        self.done + self.failed + self.cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_spelling() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Ok(*s));
        }
        for s in CellState::ALL {
            assert_eq!(s.as_str().parse::<CellState>(), Ok(*s));
        }
        for s in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(s.as_str()), Ok(*s));
        }
        for s in ShownState::ALL {
            assert_eq!(ShownState::parse(s.as_str()), Ok(*s));
        }
        for s in SweepState::ALL {
            assert_eq!(SweepState::parse(s.as_str()), Ok(*s));
        }
    }

    #[test]
    fn an_unknown_spelling_names_the_known_ones() {
        let err = RunState::parse("leasd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown run state `leasd` (known: pending, leased, done, failed, cancelled)"
        );
    }

    #[test]
    fn a_pending_cell_of_a_leased_run_is_running() {
        assert_eq!(
            CellState::Pending.shown(RunState::Leased),
            ShownState::Running
        );
        assert_eq!(
            CellState::Pending.shown(RunState::Pending),
            ShownState::Pending
        );
        assert_eq!(CellState::Done.shown(RunState::Leased), ShownState::Done);
        assert_eq!(RunState::Leased.shown(), ShownState::Running);
    }
}

//! Content-hash identities.
//!
//! A run's id hashes its canonical parameters (the classifier it trains); a cell's id hashes its
//! run id, attack and ε, and what wraps the classifier for it when anything does. The
//! same experiment therefore has the same id in every sweep file and every submission, which is
//! what lets the coordinator reuse finished work and refuse duplicates.
//!
//! These are where content ids are made: as typed ids ([`RunId`], [`CellId`], [`SweepId`]),
//! which the rest of the coordinator passes along unchanged. (A typed id serializes as its
//! string, so the hashed forms, and the ids, are those of plain strings.)

use advsweep_core::{
    Attack, CellId, DataSpec, Defense, EpsilonSpace, InferenceDefense, Model, RunId, RunSpec,
    SweepId, TrainingSpec,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The SHA-256 of `value`'s canonical JSON.
fn digest(value: &impl Serialize) -> sha2::digest::Output<Sha256> {
    // Serializing our own plain data types to JSON cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&bytes)
}

/// Everything that changes what a run computes (the classifier it trains): not its id or
/// display names, nor what wraps the classifier at evaluation (each cell's).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RunIdentity<'a> {
    pub model: &'a Model,
    #[serde(serialize_with = "defense_as_before")]
    pub defense: &'a Defense,
    pub training: &'a TrainingSpec,
    pub data: &'a DataSpec,
    pub seed: u64,
    pub epsilon_space: EpsilonSpace,
}

impl<'a> RunIdentity<'a> {
    /// The identity of a run as specified.
    pub fn of(run: &'a RunSpec) -> Self {
        RunIdentity {
            model: &run.model,
            defense: &run.defense,
            training: &run.training,
            data: &run.data,
            seed: run.seed,
            epsilon_space: run.epsilon_space,
        }
    }

    /// The run's id: this identity, hashed.
    pub fn id(&self) -> RunId {
        RunId::from_digest(digest(self).as_ref())
    }
}

/// A defense as run ids hashed it when the run also held the inference defense: the method,
/// then `inference_noise` and `denoiser` as `null`, so a run without one keeps its id (and a
/// run that had one now shares the id of the same classifier without it).
fn defense_as_before<S: serde::Serializer>(defense: &&Defense, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Before<'a> {
        method: &'a advsweep_core::TrainingMethod,
        inference_noise: Option<()>,
        denoiser: Option<()>,
    }
    Before {
        method: &defense.method,
        inference_noise: None,
        denoiser: None,
    }
    .serialize(s)
}

/// The id a run has: [`RunIdentity::of`] it, hashed (its own `id` plays no part).
pub fn run_id(run: &RunSpec) -> RunId {
    RunIdentity::of(run).id()
}

#[derive(Serialize)]
struct CellIdentity<'a> {
    run_id: &'a RunId,
    attack: &'a Attack,
    epsilon: f64,
    /// Left out when empty, so cells of the bare classifier keep the ids they always had.
    #[serde(skip_serializing_if = "InferenceDefense::is_empty")]
    inference: &'a InferenceDefense,
}

/// A cell's id: its run, attack and ε, and what wraps the run's classifier for it.
pub fn cell_id(
    run_id: &RunId,
    attack: &Attack,
    epsilon: f64,
    inference: &InferenceDefense,
) -> CellId {
    CellId::from_digest(
        digest(&CellIdentity {
            run_id,
            attack,
            epsilon,
            inference,
        })
        .as_ref(),
    )
}

/// A sweep's id: its name and the set of its cells, in any order.
pub fn sweep_id<'a>(name: &str, cell_ids: impl IntoIterator<Item = &'a CellId>) -> SweepId {
    let mut sorted: Vec<&str> = cell_ids.into_iter().map(CellId::as_str).collect();
    sorted.sort_unstable();
    SweepId::from_digest(digest(&(name, sorted)).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids already stored must not change: a typed id hashes as the string it wraps.
    #[test]
    fn typed_ids_hash_as_their_strings() {
        #[derive(Serialize)]
        struct Plain<'a> {
            run_id: &'a str,
            attack: &'a Attack,
            epsilon: f64,
        }
        let run = RunId::from_digest(&[7; 32]);
        let attack = Attack::None;
        let plain = Plain {
            run_id: run.as_str(),
            attack: &attack,
            epsilon: 0.5,
        };
        let cell = cell_id(&run, &attack, 0.5, &InferenceDefense::default());
        assert_eq!(cell, CellId::from_digest(digest(&plain).as_ref()));
        let other = CellId::from_digest(&[1; 32]);
        let mut sorted = vec![cell.as_str(), other.as_str()];
        sorted.sort_unstable();
        let plain_sweep = digest(&("name", sorted));
        assert_eq!(
            sweep_id("name", [&cell, &other]),
            SweepId::from_digest(plain_sweep.as_ref())
        );
    }
}

//! Content-hash identities.
//!
//! A run's id hashes its canonical parameters; a cell's id hashes its run id, attack and ε. The
//! same experiment therefore has the same id in every sweep file and every submission, which is
//! what lets the coordinator reuse finished work and refuse duplicates.

use advsweep_core::ids::ContentId;
use advsweep_core::{Attack, DataSpec, Defense, EpsilonSpace, Model, RunSpec, TrainingSpec};
use serde::Serialize;
use sha2::{Digest, Sha256};

fn hash_id(kind: ContentId, value: &impl Serialize) -> String {
    // Serializing our own plain data types to JSON cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    kind.from_digest(&Sha256::digest(&bytes))
}

#[derive(Serialize)]
struct RunIdentity<'a> {
    model: &'a Model,
    defense: &'a Defense,
    training: &'a TrainingSpec,
    data: &'a DataSpec,
    seed: u64,
    epsilon_space: EpsilonSpace,
}

/// Hashes everything that changes what a run computes; not its id or display names.
pub fn run_id(run: &RunSpec) -> String {
    hash_id(
        ContentId::Run,
        &RunIdentity {
            model: &run.model,
            defense: &run.defense,
            training: &run.training,
            data: &run.data,
            seed: run.seed,
            epsilon_space: run.epsilon_space,
        },
    )
}

#[derive(Serialize)]
struct CellIdentity<'a> {
    run_id: &'a str,
    attack: &'a Attack,
    epsilon: f64,
}

pub fn cell_id(run_id: &str, attack: &Attack, epsilon: f64) -> String {
    hash_id(
        ContentId::Cell,
        &CellIdentity {
            run_id,
            attack,
            epsilon,
        },
    )
}

/// A sweep's id: its name and the set of its cells, in any order.
pub fn sweep_id(name: &str, cell_ids: &[String]) -> String {
    let mut sorted: Vec<&str> = cell_ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    hash_id(ContentId::Sweep, &(name, sorted))
}

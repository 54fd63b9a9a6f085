//! A long cell resumed after its stored chunks (issue 19) gives exactly the result of an
//! uninterrupted evaluation, and reports exactly the chunks that were still missing.
//!
//! Its own test binary, with one test: the attacks draw from torch's process-wide generator
//! (re-seeded from the cell's stream), which tests running in parallel would draw from too.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use advsweep_core::catalogue::presets;
use advsweep_core::{ApgdLoss, Attack, CascadeVersion, CellChunk, CellResult, Norm};
use advsweep_worker::attacks::Budget;
use advsweep_worker::data::{Dataset, synthetic};
use advsweep_worker::evaluate::{CellInput, Chunking, CleanPredictions, evaluate_cell_in_chunks};
use advsweep_worker::models::{self, Classifier};
use advsweep_worker::rng::Rng;
use tch::Device;

/// Evaluates `attack` in batches of 20, resuming after `done`, a chunk after every batch;
/// returns the result and the chunks it reported.
fn evaluate(
    model: &dyn Classifier,
    data: &Dataset,
    attack: &Attack,
    done: &[CellChunk],
) -> anyhow::Result<(CellResult, Vec<CellChunk>)> {
    let mut reported = Vec::new();
    let mut emit = |chunk: CellChunk| {
        reported.push(chunk);
        Ok(())
    };
    let input = CellInput {
        model,
        data,
        attack,
        budget: Budget::pixel(8.0 / 255.0),
        eval_batch_size: 20,
    };
    let chunking = Chunking {
        done,
        every: Duration::ZERO,
        emit: &mut emit,
    };
    let result = evaluate_cell_in_chunks(
        input,
        &mut CleanPredictions::default(),
        &mut Rng::new(11),
        &AtomicBool::new(false),
        Some(chunking),
    )?;
    Ok((result, reported))
}

/// Everything but the wall time.
fn measured(r: &CellResult) -> (f64, f64, f64, f64, u32, Vec<(String, f64)>) {
    (
        r.accuracy,
        r.attack_success_rate,
        r.mean_linf,
        r.mean_l2,
        r.examples,
        r.stages
            .iter()
            .map(|s| (s.name.clone(), s.accuracy))
            .collect(),
    )
}

fn without_time(chunks: &[CellChunk]) -> Vec<CellChunk> {
    chunks
        .iter()
        .map(|c| CellChunk {
            seconds: 0.0,
            ..c.clone()
        })
        .collect()
}

#[test]
fn a_resumed_cell_equals_an_uninterrupted_one() -> anyhow::Result<()> {
    let (train, test) = synthetic::generate(3, 60, 90)?;
    let data = Dataset::from_host(train, test, "synthetic".into(), Device::Cpu)?;
    tch::manual_seed(0);
    let model = models::build("basic", Device::Cpu)?;
    let norm = Norm::Linf;
    let cascade = Attack::AutoAttack {
        norm,
        version: CascadeVersion::Custom,
        stages: vec![
            Attack::Apgd {
                norm,
                loss: ApgdLoss::Ce,
                targets: 0,
                steps: 5,
                restarts: 1,
                eot: 1,
            },
            Attack::Square {
                norm,
                queries: 30,
                p_init: 0.8,
                restarts: 1,
            },
        ],
    };
    for attack in [presets::PGD_LINF, cascade] {
        let (whole, chunks) = evaluate(model.as_ref(), &data, &attack, &[])?;
        // 90 images in batches of 20: a chunk after each of the first four batches, none
        // after the last (the result follows).
        let bounds: Vec<(u32, u32)> = chunks.iter().map(|c| (c.start, c.images)).collect();
        assert_eq!(
            bounds,
            [(0, 20), (20, 20), (40, 20), (60, 20)],
            "{attack:?}"
        );
        for c in &chunks {
            c.validate()?;
        }
        for k in 1..=chunks.len() {
            let (resumed, rest) = evaluate(model.as_ref(), &data, &attack, &chunks[..k])?;
            assert_eq!(
                measured(&resumed),
                measured(&whole),
                "{attack:?} resumed after {k} chunks"
            );
            assert_eq!(without_time(&rest), without_time(&chunks[k..]));
        }
        // Chunks that cannot be resumed from (a gap) are ignored: the cell starts over.
        let gap = [chunks[0].clone(), chunks[2].clone()];
        let (over, all) = evaluate(model.as_ref(), &data, &attack, &gap)?;
        assert_eq!(measured(&over), measured(&whole));
        assert_eq!(all.len(), chunks.len());
    }
    Ok(())
}

//! A state directory written before cells carried their own inference defense (schema 5: the
//! run held the noise σ and the denoiser, its cells only their attack): opened by this version,
//! its pending cells still carry the run's defense, so they are evaluated with it, not bare.

use super::{plan, registered, store};
use crate::scheduler::LeaseSettings;
use crate::store::LeaseOutcome;

const NOISY: &str = r#"
version = 1
name = "noisy"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["noise-injection"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

#[tokio::test]
async fn schema_5_runs_hand_their_inference_defense_to_their_cells() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = {
        let s = store(&dir, LeaseSettings::default());
        s.submit(plan(NOISY), NOISY.to_string())
            .await
            .expect("submit");
        s.store.path().to_path_buf()
    };
    // Make it the old layout: the run's spec holds the defense, the cells none, version 5.
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "UPDATE runs SET defense_name = 'noise-injection',
                 spec_json = json_set(spec_json, '$.defense.inference_noise', 0.05,
                                      '$.defense.denoiser', json('null'));
             UPDATE cells SET spec_json = json_remove(spec_json, '$.defense_name', '$.inference');
             PRAGMA user_version = 5;",
        )
        .expect("downgrade");
        let bare: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM cells WHERE json_extract(spec_json, '$.inference') IS NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(bare, 2);
    }
    let s = store(&dir, LeaseSettings::default());
    let w = registered(&s).await;
    let LeaseOutcome::Granted(g) = s.lease(w, None).await.expect("lease") else {
        panic!("the pending run is leased");
    };
    assert_eq!(g.cells.len(), 2);
    for cell in &g.cells {
        assert_eq!(cell.inference.inference_noise, Some(0.05), "{cell:?}");
        assert_eq!(cell.inference.denoiser, None);
        assert_eq!(cell.defense_name, "noise-injection");
    }
}

//! One slice of a cell's test images: how an expensive evaluation (a full AutoAttack of a
//! WideResNet on 10,000 images) is spread over many workers.
//!
//! A sharded grid point becomes `count` runs that differ only in [`DataShard::index`]; each is
//! leased, retried and resumed alone, and reports merge their cells' counts back into one cell.
//! Slices are cut at evaluation-batch boundaries and every batch's randomness is a function of
//! the cell and the batch's first image, so the merged counts equal an unsharded evaluation's.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Slice `index` of `count` disjoint slices of the evaluated test images (after `eval_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataShard {
    pub index: u32,
    pub count: u32,
}

impl DataShard {
    /// The test images `[start, end)` of this slice when `images` are evaluated in batches of
    /// `batch`: the batches `[index·B/count, (index+1)·B/count)` of the `B` batches, so every
    /// slice starts on a batch boundary and the slices tile `0..images` in order. A slice is
    /// empty when there are fewer batches than slices.
    pub fn images(&self, images: u64, batch: u64) -> Range<u64> {
        let batch = batch.max(1);
        let count = u64::from(self.count.max(1));
        let batches = images.div_ceil(batch);
        let first = batches * u64::from(self.index) / count;
        let last = batches * (u64::from(self.index) + 1) / count;
        (first * batch).min(images)..(last * batch).min(images)
    }

    /// `index/count`, 1-based for people (`2/3` is the second of three).
    pub fn label(&self) -> String {
        format!("{}/{}", self.index + 1, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::DataShard;

    #[test]
    fn slices_tile_the_images_on_batch_boundaries() {
        for (images, batch, count) in [(10_000, 128, 3), (500, 100, 7), (1, 1, 1), (257, 64, 4)] {
            let mut next = 0;
            for index in 0..count {
                let range = DataShard { index, count }.images(images, batch);
                assert_eq!(range.start, next, "{images} images, {count} shards");
                assert!(range.start % batch == 0 || range.start == images);
                next = range.end;
            }
            assert_eq!(next, images);
        }
    }

    #[test]
    fn more_slices_than_batches_leaves_some_empty() {
        let sizes: Vec<u64> = (0..4)
            .map(|index| {
                let r = DataShard { index, count: 4 }.images(200, 100);
                r.end - r.start
            })
            .collect();
        assert_eq!(sizes, [0, 100, 0, 100]);
    }
}

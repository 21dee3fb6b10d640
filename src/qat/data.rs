//! Small classification datasets for quantization-aware training: the UCI handwritten digits
//! shipped in `data/digits.csv.gz`, and a fixed, seeded train/test split.

use std::io::Read;
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};

/// Rows of features with a class label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Row-major features, `len() × features`.
    pub x: Vec<f32>,
    /// One label per row, below `classes`.
    pub y: Vec<u32>,
    /// Features per row.
    pub features: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let f = self.features;
        Dataset {
            x: idx
                .iter()
                .flat_map(|&i| self.x[i * f..(i + 1) * f].iter().copied())
                .collect(),
            y: idx.iter().map(|&i| self.y[i]).collect(),
            features: f,
            classes: self.classes,
        }
    }

    /// A fixed split: rows shuffled with `seed`, the last `test_fraction` held out.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(seed));
        let test = ((self.len() as f64) * test_fraction).round() as usize;
        let (train, held) = idx.split_at(self.len() - test);
        (self.select(train), self.select(held))
    }
}

/// The digits set: a gzip'd CSV of 64 pixels (0..16) and a label per line; pixels are scaled
/// to [0, 1].
pub fn digits(path: &Path) -> Result<Dataset> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, msg: String| Error::Format {
        path: path.into(),
        msg: format!("line {line}: {msg}"),
    };
    let mut ds = Dataset {
        x: Vec::new(),
        y: Vec::new(),
        features: 64,
        classes: 10,
    };
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(bad(n + 1, format!("{} fields, expected 65", fields.len())));
        }
        for f in &fields[..64] {
            let v: f32 = f
                .trim()
                .parse()
                .map_err(|_| bad(n + 1, format!("pixel '{f}' is not a number")))?;
            ds.x.push(v / 16.0);
        }
        let label: u32 = fields[64]
            .trim()
            .parse()
            .map_err(|_| bad(n + 1, "bad label".into()))?;
        if label >= 10 {
            return Err(bad(n + 1, format!("label {label} outside 0..9")));
        }
        ds.y.push(label);
    }
    Ok(ds)
}

/// `data/digits.csv.gz` in this crate.
pub fn digits_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("digits.csv.gz")
}

//! The input of a run: one `.safetensors` file or a sharded checkpoint described by a
//! `*.safetensors.index.json`, every shard memory-mapped read-only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::Deserialize;

use super::file::{Checkpoint, TensorEntry};
use crate::error::{Error, Result};

/// One input tensor: where it lives and what it is.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Which shard holds it.
    pub shard: usize,
    /// Its bytes within the shard file.
    pub range: std::ops::Range<usize>,
}

impl SourceTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of its data.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.bitsize() / 8
    }

    /// Whether it has a float dtype.
    pub fn is_float(&self) -> bool {
        TensorEntry {
            name: String::new(),
            dtype: self.dtype,
            shape: vec![],
            data: &[],
        }
        .is_float()
    }
}

/// The mapped shards and the tensors in them, in shard then file order.
pub struct Source {
    path: PathBuf,
    shards: Vec<Checkpoint>,
    tensors: Vec<SourceTensor>,
    metadata: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// Largest shard index read (a 100k-tensor model's index is about 10 MB).
const MAX_INDEX_BYTES: u64 = 256 << 20;

impl Source {
    /// Opens a `.safetensors` file, or every shard named by a `.index.json`.
    pub fn open(path: &Path) -> Result<Self> {
        if path.to_string_lossy().ends_with(".json") {
            return Self::open_index(path);
        }
        let ckpt = Checkpoint::open(path)?;
        let metadata = ckpt.metadata()?;
        let mut s = Self {
            path: path.into(),
            shards: vec![ckpt],
            tensors: Vec::new(),
            metadata,
        };
        s.collect(None)?;
        Ok(s)
    }

    fn open_index(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Format {
            path: path.into(),
            msg,
        };
        super::output::check_input(path)?;
        // An index is a name map; one larger than this is no index, and is not read whole.
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_INDEX_BYTES {
            return Err(bad(format!(
                "{len} bytes is too large for a shard index (at most {MAX_INDEX_BYTES})"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a safetensors index: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<&String> = index.weight_map.values().collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(bad("the index maps no tensors".into()));
        }
        let mut shards = Vec::new();
        for f in &files {
            if Path::new(f).components().count() != 1 {
                return Err(bad(format!(
                    "shard '{f}' is not a file name beside the index"
                )));
            }
            shards.push(Checkpoint::open(&dir.join(f))?);
        }
        let metadata = shards[0].metadata()?;
        let mut s = Self {
            path: path.into(),
            shards,
            tensors: Vec::new(),
            metadata,
        };
        let expected: HashMap<&str, usize> = index
            .weight_map
            .iter()
            .filter_map(|(t, f)| files.iter().position(|g| *g == f).map(|i| (t.as_str(), i)))
            .collect();
        s.collect(Some(&expected))?;
        Ok(s)
    }

    /// Lists the shards' tensors, checking them against the index when there is one.
    fn collect(&mut self, expected: Option<&HashMap<&str, usize>>) -> Result<()> {
        let mut seen = HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            for t in shard.tensors()? {
                if !seen.insert(t.name.clone()) {
                    return Err(shard.tensor_error(&t.name, "appears in more than one shard"));
                }
                if let Some(exp) = expected
                    && exp.get(t.name.as_str()) != Some(&i)
                {
                    return Err(
                        shard.tensor_error(&t.name, "is not mapped to this shard by the index")
                    );
                }
                let start = t.data.as_ptr() as usize - shard.bytes().as_ptr() as usize;
                let range = start..start + t.data.len();
                self.tensors.push(SourceTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    shard: i,
                    range,
                });
            }
        }
        if let Some(exp) = expected
            && let Some(missing) = exp.keys().find(|n| !seen.contains(**n))
        {
            return Err(Error::Format {
                path: self.path.clone(),
                msg: format!("the index maps tensor '{missing}' to a shard that does not hold it"),
            });
        }
        Ok(())
    }

    /// The path given to [`Source::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor.
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    /// The first shard's `__metadata__`.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.as_ref()
    }

    /// The shard holding `t`.
    pub fn shard(&self, t: &SourceTensor) -> &Checkpoint {
        &self.shards[t.shard]
    }

    /// The bytes of `t`, borrowed from its shard's map.
    pub fn data(&self, t: &SourceTensor) -> &[u8] {
        &self.shard(t).bytes()[t.range.clone()]
    }

    /// The wgquant records of every shard, by tensor name.
    pub fn records(&self) -> Result<BTreeMap<String, crate::format::disk::TensorRecord>> {
        let mut out = BTreeMap::new();
        for shard in &self.shards {
            let meta = shard.metadata()?;
            let recs =
                crate::format::disk::records(meta.as_ref()).map_err(|msg| Error::Format {
                    path: shard.path().into(),
                    msg,
                })?;
            out.extend(recs);
        }
        Ok(out)
    }

    /// The stored tensor `name`, as a part for [`crate::format::disk::from_parts`].
    pub fn part(&self, name: &str) -> Option<crate::format::disk::StoredPart<'_>> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| crate::format::disk::StoredPart {
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: self.data(t),
            })
    }

    /// Paths of the shard files.
    pub fn shard_paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path()).collect()
    }

    /// An error about tensor `t`, naming its file.
    pub fn tensor_error(&self, t: &SourceTensor, msg: impl Into<String>) -> Error {
        self.shard(t).tensor_error(&t.name, msg)
    }
}

//! Where uploaded evaluation keys live: one file per key, `DIR/<model fingerprint>/<id>.key`,
//! written atomically (a temporary file, flushed, renamed, the folder flushed), so that a
//! crash at any point leaves a whole key or none, and several replicas can share `DIR`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A key store: what the server needs of one, so that another (a database, an object store)
/// can take the folder's place.
pub trait KeyStore: Send + Sync + 'static {
    /// Stores `bytes` as key `id` of model `model` (a fingerprint); whole or not at all.
    fn put(&self, model: &str, id: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// The key's bytes, `None` when there is no such key; refused past `limit` bytes.
    fn get(&self, model: &str, id: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>>;
    /// Whether the key exists (cheap: asked before each use of a cached key, so that a key
    /// deleted through another replica is gone everywhere).
    fn exists(&self, model: &str, id: &str) -> bool;
    /// Deletes the key; `false` when there was none.
    fn delete(&self, model: &str, id: &str) -> std::io::Result<bool>;
    /// How many keys are stored for `model`.
    fn count(&self, model: &str) -> usize;
}

/// Keys in a folder (local disk or a volume the replicas share).
pub struct DirStore {
    root: PathBuf,
}

/// A key id: 32 lowercase hex digits (128 random bits), nothing else reaches a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_model(m: &str) -> bool {
    !m.is_empty() && m.len() <= 64 && m.bytes().all(|b| b.is_ascii_hexdigit())
}

impl DirStore {
    /// Opens (creating) the folder and removes temporary files older than an hour (left by
    /// a replica killed mid-upload; younger ones may be another replica's upload in flight).
    ///
    /// # Errors
    /// The folder cannot be created or read.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let store = Self {
            root: root.to_path_buf(),
        };
        store.clean(Duration::from_secs(3600))?;
        Ok(store)
    }

    /// Removes temporary files older than `age`; returns how many.
    ///
    /// # Errors
    /// The folder cannot be read.
    pub fn clean(&self, age: Duration) -> std::io::Result<usize> {
        let now = SystemTime::now();
        let mut n = 0;
        for model in std::fs::read_dir(&self.root)?.flatten() {
            if !model.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in std::fs::read_dir(model.path())?.flatten() {
                let name = f.file_name();
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= age);
                if name.to_string_lossy().starts_with(".tmp-")
                    && old
                    && std::fs::remove_file(f.path()).is_ok()
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn path(&self, model: &str, id: &str) -> Option<PathBuf> {
        (valid_model(model) && valid_id(id))
            .then(|| self.root.join(model).join(format!("{id}.key")))
    }
}

fn invalid() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a key id")
}

impl KeyStore for DirStore {
    fn put(&self, model: &str, id: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(model, id).ok_or_else(invalid)?;
        let dir = path.parent().ok_or_else(invalid)?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{id}-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // the rename itself reaches the disk
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn get(&self, model: &str, id: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let Some(path) = self.path(model, id) else {
            return Ok(None);
        };
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        f.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than a key of this model can be",
                    path.display()
                ),
            ));
        }
        Ok(Some(bytes))
    }

    fn exists(&self, model: &str, id: &str) -> bool {
        self.path(model, id).is_some_and(|p| p.is_file())
    }

    fn delete(&self, model: &str, id: &str) -> std::io::Result<bool> {
        let Some(path) = self.path(model, id) else {
            return Ok(false);
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn count(&self, model: &str) -> usize {
        if !valid_model(model) {
            return 0;
        }
        std::fs::read_dir(self.root.join(model)).map_or(0, |d| {
            d.flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with(".key"))
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_paths_stay_inside() {
        let dir = std::env::temp_dir().join(format!("fhec-store-{}", std::process::id()));
        let s = DirStore::open(&dir).unwrap();
        let (m, id) = ("00ff", "0123456789abcdef0123456789abcdef");
        s.put(m, id, b"key").unwrap();
        assert!(s.exists(m, id));
        assert_eq!(s.get(m, id, 3).unwrap().unwrap(), b"key");
        assert!(s.get(m, id, 2).is_err());
        assert_eq!(s.count(m), 1);
        for bad in ["../../etc/passwd", "0123456789ABCDEF0123456789abcdef", ""] {
            assert!(s.put(m, bad, b"x").is_err());
            assert_eq!(s.get(m, bad, 9).unwrap(), None);
        }
        assert!(s.put("..", id, b"x").is_err());
        assert!(s.delete(m, id).unwrap());
        assert!(!s.delete(m, id).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

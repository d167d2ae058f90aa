//! The data directory's lock, as sled takes it: an exclusive `flock(2)` on `log/db`.

use std::path::Path;
use std::time::{Duration, Instant};

/// Waits (up to `within`) until no process or thread holds the log's file lock in `dir`,
/// and says whether it is free. A dropped store is not closed at once: sled's flusher
/// thread lets go of the lock a moment later, and an in-process restart (tests, embedding)
/// must not see "another runnel is using this data directory" for it.
pub fn wait_released(dir: &Path, within: Duration) -> bool {
    let Ok(file) = std::fs::File::open(dir.join("log").join("db")) else {
        return true; // no log yet, so nothing holds it
    };
    let until = Instant::now() + within;
    loop {
        // std's lock is flock(2) on Linux, as sled's is: ours conflicts until sled's is gone,
        // and dropping ours (at once, below) releases it.
        if file.try_lock().is_ok() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::SledLog;

    /// `wait_released` sees sled's lock while a store is open and its release after.
    #[test]
    fn wait_released_sees_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let short = Duration::from_millis(50);
        assert!(wait_released(dir.path(), short), "no log yet");
        let store = SledLog::open(dir.path(), &StoreConfig::default()).unwrap();
        assert!(
            !wait_released(dir.path(), short),
            "an open store holds the lock"
        );
        drop(store);
        assert!(wait_released(dir.path(), Duration::from_secs(5)));
        SledLog::open(dir.path(), &StoreConfig::default()).unwrap();
    }
}

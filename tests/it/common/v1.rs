//! Data directories as runnel 0.1.0 wrote them (format 1), for the tests of the upgrade:
//! `e` + seq → `1`, time (u64 LE), topic count (u16 LE), each topic as a length byte and
//! its text, then the event's SSE frame; `t` + topic + `0x00` + seq → the record's size
//! (u32 BE) and topic count; `p` + topic → the newest seq retention removed from it;
//! `m` + name → `incarnation` (u32 BE) and `seq_hw` (u64 BE).

use std::path::Path;
use std::time::{Duration, Instant};

/// A format 1 log being written.
pub struct V1 {
    db: sled::Db,
    incarnation: u32,
}

impl V1 {
    pub fn create(dir: &Path, incarnation: u32) -> V1 {
        let db = sled::Config::new()
            .path(dir.join("log"))
            .cache_capacity(1 << 20)
            .open()
            .unwrap();
        db.insert(meta("incarnation"), &incarnation.to_be_bytes())
            .unwrap();
        V1 { db, incarnation }
    }

    pub fn id(&self, seq: u64) -> String {
        format!("{:08x}-{seq:016x}", self.incarnation)
    }

    /// The SSE frame 0.1.0 stored (and sent) for an event.
    pub fn frame(&self, seq: u64, topics: &[&str], event: Option<&str>, data: &str) -> String {
        let mut f = format!("id: {}\n", self.id(seq));
        for t in topics {
            f.push_str(&format!("topic: {t}\n"));
        }
        if let Some(e) = event {
            f.push_str(&format!("event: {e}\n"));
        }
        for line in data.split('\n') {
            f.push_str(&format!("data: {line}\n"));
        }
        f.push('\n');
        f
    }

    /// Writes one event: its record and an index entry per topic.
    pub fn event(&self, seq: u64, topics: &[&str], event: Option<&str>, data: &str) {
        let mut rec = vec![1u8];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        rec.extend_from_slice(&now.to_le_bytes());
        rec.extend_from_slice(&(topics.len() as u16).to_le_bytes());
        for t in topics {
            rec.push(t.len() as u8);
            rec.extend_from_slice(t.as_bytes());
        }
        rec.extend_from_slice(self.frame(seq, topics, event, data).as_bytes());
        let mut meta = [0u8; 5];
        meta[..4].copy_from_slice(&(rec.len() as u32).to_be_bytes());
        meta[4] = topics.len() as u8;
        let mut k = vec![b'e'];
        k.extend_from_slice(&seq.to_be_bytes());
        self.db.insert(k, rec).unwrap();
        for t in topics {
            self.db.insert(index_key(t, seq), &meta[..]).unwrap();
        }
    }

    /// Takes an event off one topic, as 0.1.0's count retention did.
    pub fn prune(&self, topic: &str, seq: u64) {
        self.db.remove(index_key(topic, seq)).unwrap();
        let mut k = vec![b'p'];
        k.extend_from_slice(topic.as_bytes());
        self.db.insert(k, &seq.to_be_bytes()).unwrap();
    }

    /// The sequence high-water mark 0.1.0 kept for live-only events.
    pub fn high_water(&self, seq: u64) {
        self.db.insert(meta("seq_hw"), &seq.to_be_bytes()).unwrap();
    }

    /// Flushes and closes the log, and waits until sled has let go of the directory.
    pub fn close(self, dir: &Path) {
        self.db.flush().unwrap();
        drop(self.db);
        let file = std::fs::File::open(dir.join("log").join("db")).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while file.try_lock().is_err() {
            assert!(Instant::now() < until, "sled still holds the log");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Counts a tree's keys by their first byte, e.g. `b'e'` (format 1 events) or `b'r'`
/// (format 2 runs), in a closed data directory.
pub fn keys_with_prefix(dir: &Path, prefix: u8) -> usize {
    let db = sled::Config::new().path(dir.join("log")).open().unwrap();
    let n = db.scan_prefix([prefix]).count();
    drop(db);
    let file = std::fs::File::open(dir.join("log").join("db")).unwrap();
    while file.try_lock().is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    n
}

fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(name.as_bytes());
    k
}

fn index_key(topic: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

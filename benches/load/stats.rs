//! Results: what each stream reader counted, and latency percentiles.

use crate::clock::now_ns;

/// What a stream reader reports back.
#[derive(Default)]
pub struct Tally {
    pub latencies_us: Vec<u32>,
    pub received: u64,
    pub dup: u64,
    /// Received seqs, as a bitset.
    seen: Vec<u64>,
    pub last_id: Option<String>,
    /// With [`Tally::ordered`]: every event as it arrived, (seq, hash of its id).
    pub order: Option<Vec<(u64, u64)>>,
    /// With [`Tally::ordered`]: events whose id was missing or not above the previous one
    /// (as strings).
    pub ids_not_increasing: u64,
}

impl Tally {
    /// A tally that also keeps the order of arrival and checks that ids increase.
    pub fn ordered() -> Tally {
        Tally {
            order: Some(Vec::new()),
            ..Tally::default()
        }
    }

    /// The event `seq` arrived with `id` (after [`Tally::record`]).
    pub fn arrived(&mut self, seq: u64, id: Option<&str>) {
        if let Some(order) = &mut self.order {
            if id.is_none() || self.last_id.as_deref() >= id {
                self.ids_not_increasing += 1;
            }
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&id, &mut h);
            order.push((seq, std::hash::Hasher::finish(&h)));
        }
        if let Some(id) = id {
            self.last_id = Some(id.to_string());
        }
    }

    pub fn record(&mut self, seq: u64, sent_ns: u64) {
        let word = (seq / 64) as usize;
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            self.dup += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        let lat = now_ns().saturating_sub(sent_ns) / 1000;
        self.latencies_us.push(lat.min(u32::MAX as u64) as u32);
    }
}

pub struct Lat {
    p50: f64,
    pub p99: f64,
    p999: f64,
    max: f64,
}

pub fn percentiles(mut v: Vec<u32>) -> Option<Lat> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    Some(Lat {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: *v.last().unwrap() as f64 / 1000.0,
    })
}

pub fn lat_text(l: &Option<Lat>) -> String {
    match l {
        Some(l) => format!(
            "p50={:.1}ms p99={:.1}ms p999={:.1}ms max={:.1}ms",
            l.p50, l.p99, l.p999, l.max
        ),
        None => "no samples".into(),
    }
}

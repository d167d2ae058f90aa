//! publish: how many events concurrent publishers get in, each waiting for its answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::client::expand;
use crate::clock::data_for;
use crate::publisher::Publisher;
use crate::server::Server;
use crate::stats::{lat_text, percentiles};

pub async fn publish(server: &Server, opts: &Opts) {
    let stop_at = Instant::now() + Duration::from_secs_f64(opts.duration);
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for p in 0..opts.publishers {
        let (count, failed, lats) = (count.clone(), failed.clone(), lats.clone());
        let (addr, o) = (server.addr, opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Publisher::connect(addr).await;
            let mut mine = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < stop_at {
                let topic = format!("pub{p}");
                let (path, ctype, body) = if o.batch > 1 {
                    let items: Vec<serde_json::Value> = (0..o.batch)
                        .map(|k| {
                            serde_json::json!({"topic": topic,
                                "data": data_for(seq + k as u64, o.payload)})
                        })
                        .collect();
                    (
                        "/publish".to_string(),
                        "application/json",
                        serde_json::to_vec(&items).unwrap(),
                    )
                } else {
                    let data = data_for(seq, o.payload);
                    (
                        expand(&o.pub_path, &topic, ""),
                        o.pub_content_type.as_str(),
                        expand(&o.pub_body, &topic, &data).into_bytes(),
                    )
                };
                let t = Instant::now();
                let (status, _) = conn.post(&o, &path, ctype, &body).await;
                mine.push(t.elapsed().as_micros() as u32);
                if (200..300).contains(&status) {
                    count.fetch_add(o.batch as u64, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                seq += o.batch as u64;
            }
            lats.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    let lats = std::mem::take(&mut *lats.lock().unwrap());
    println!(
        "publish publishers={} batch={} payload={}B events={n} failed={} events/s={:.0} \
         requests/s={:.0} request_{}",
        opts.publishers,
        opts.batch,
        opts.payload,
        failed.load(Ordering::Relaxed),
        n as f64 / secs,
        lats.len() as f64 / secs,
        lat_text(&percentiles(lats)),
    );
}

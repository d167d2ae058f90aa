//! startup: how long a hub takes to answer /health with `--events` events in its log.

use std::time::Instant;

use tokio::io::AsyncWriteExt;

use crate::Opts;
use crate::clock::data_for;
use crate::publisher::Publisher;
use crate::server::Server;

pub fn startup(opts: &Opts) {
    assert!(opts.spawn, "the startup scenario needs --spawn");
    let mut o = opts.clone();
    o.env.push("RUNNEL_STORE_RETENTION_EVENTS=10000000".into());
    o.env.push("RUNNEL_STORE_SYNC=none".into());
    let mut server = Server::spawn(&o, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut p = Publisher::connect(server.addr).await;
        let mut seq = 0u64;
        while seq < o.events as u64 {
            let n = (o.events as u64 - seq).min(1000);
            let items: Vec<serde_json::Value> = (0..n)
                .map(|k| {
                    serde_json::json!({"topic": format!("s{}", (seq + k) % 10),
                    "data": data_for(seq + k, o.payload)})
                })
                .collect();
            let (status, body) = p
                .post(
                    &o,
                    "/publish",
                    "application/json",
                    &serde_json::to_vec(&items).unwrap(),
                )
                .await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            seq += n;
        }
    });
    let dir = server.stop();
    let mut times = Vec::new();
    let mut dir = dir;
    for _ in 0..3 {
        let t = Instant::now();
        let mut s = Server::spawn(&o, dir.take());
        // Ready: it answers /health.
        let ok = rt.block_on(async {
            let mut p = Publisher::connect(s.addr).await;
            p.stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .ok();
            p.read_response().await.map(|(st, _)| st)
        });
        times.push(t.elapsed());
        assert_eq!(ok, Some(200));
        let rss = s.rss_kib();
        eprintln!("  ready after {:?}, rss {:?} KiB", t.elapsed(), rss);
        dir = s.stop();
    }
    times.sort();
    println!(
        "startup events={} ready_median={:.0}ms ready_max={:.0}ms",
        o.events,
        times[1].as_secs_f64() * 1000.0,
        times[2].as_secs_f64() * 1000.0
    );
}

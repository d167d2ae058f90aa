//! idle: how much memory open, quiet streams cost the hub.

use std::time::Duration;

use crate::Opts;
use crate::scenarios::open_streams;
use crate::server::Server;

pub async fn idle(server: &Server, opts: &Opts) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let streams = open_streams(server, opts, opts.streams, |i| format!("idle{}", i % 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let per = match (before, after) {
        (Some(b), Some(a)) => format!(
            "rss_before={:.1}MiB rss_after={:.1}MiB per_stream={:.2}KiB",
            b as f64 / 1024.0,
            a as f64 / 1024.0,
            (a as f64 - b as f64) / opts.streams.max(1) as f64
        ),
        _ => "rss=unknown (no --pid)".into(),
    };
    if opts.streams == 0 {
        println!(
            "idle streams=0 rss={}",
            after.map_or("?".into(), |a| format!("{:.1}MiB", a as f64 / 1024.0))
        );
    } else {
        println!("idle streams={} {per}", opts.streams);
    }
    drop(streams);
}

//! reconnect: every stream drops off, misses `--behind` events, and comes back at once with
//! its Last-Event-ID.

use std::time::{Duration, Instant};

use crate::Opts;
use crate::client::expand;
use crate::clock::data_for;
use crate::publisher::Publisher;
use crate::scenarios::open_streams;
use crate::server::Server;
use crate::sse::SseReader;
use crate::stats::Tally;

pub async fn reconnect(server: &Server, opts: &Opts) {
    let n = opts.streams;
    // Everyone sees a first event, so everyone has an id to come back with.
    let streams = open_streams(server, opts, n, |_| "storm".into()).await;
    let mut readers = Vec::new();
    for s in streams {
        readers.push(tokio::spawn(async move {
            let mut t = Tally::default();
            s.run(&mut t, |t| t.received >= 1).await;
            t.last_id
        }));
    }
    let mut p = Publisher::connect(server.addr).await;
    let path = expand(&opts.pub_path, "storm", "");
    let body = expand(&opts.pub_body, "storm", &data_for(0, opts.payload));
    p.post(opts, &path, &opts.pub_content_type, body.as_bytes())
        .await;
    let mut ids = Vec::new();
    for r in readers {
        ids.push(r.await.unwrap().expect("every stream got the first event"));
    }
    // All disconnected now (their readers ended). Publish `behind` events while away.
    for seq in 1..=opts.behind as u64 {
        let body = expand(&opts.pub_body, "storm", &data_for(seq, opts.payload));
        let (status, _) = p
            .post(opts, &path, &opts.pub_content_type, body.as_bytes())
            .await;
        assert!((200..300).contains(&status), "publish failed: {status}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let behind = opts.behind as u64;
    let cpu0 = server.cpu_s();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for id in ids {
        let (addr, o) = (server.addr, opts.clone());
        let sub = expand(&opts.sub_path, "storm", "");
        tasks.push(tokio::spawn(async move {
            let s = SseReader::open(addr, &o, &sub, Some(&id)).await;
            let mut t = Tally::default();
            let _ = tokio::time::timeout(
                Duration::from_secs(120),
                s.run(&mut t, |t| t.received >= behind),
            )
            .await;
            (t.received, t.dup, t0.elapsed())
        }));
    }
    let (mut got, mut dup, mut slowest) = (0, 0, Duration::ZERO);
    for t in tasks {
        let (r, d, at) = t.await.unwrap();
        got += r;
        dup += d;
        slowest = slowest.max(at);
    }
    let cpu = match (cpu0, server.cpu_s()) {
        (Some(a), Some(b)) => format!("{:.2}s", b - a),
        _ => "?".into(),
    };
    println!(
        "reconnect clients={n} behind={behind} all_caught_up_in={:.2}s expected={} received={got} \
         lost={} dup={dup} server_cpu={cpu}",
        slowest.as_secs_f64(),
        n as u64 * behind,
        (n as u64 * behind).saturating_sub(got),
    );
}

//! Scenarios, one file each (fanout also runs many-topics), and what they share.

pub mod cluster;
pub mod fanout;
pub mod idle;
pub mod publish;
pub mod reconnect;
pub mod redis_ingress;
pub mod startup;

use crate::Opts;
use crate::client::expand;
use crate::server::Server;
use crate::sse::SseReader;

/// Opens `n` streams (topic chosen by `topic_of`), 500 at a time.
pub async fn open_streams(
    server: &Server,
    opts: &Opts,
    n: usize,
    topic_of: impl Fn(usize) -> String,
) -> Vec<SseReader> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let end = (i + 500).min(n);
        let batch: Vec<_> = (i..end)
            .map(|k| {
                let path = expand(&opts.sub_path, &topic_of(k), "");
                let (addr, o) = (server.addr, opts.clone());
                tokio::spawn(async move { SseReader::open(addr, &o, &path, None).await })
            })
            .collect();
        for b in batch {
            out.push(b.await.unwrap());
        }
        i = end;
    }
    out
}

//! Several hubs as one (SPEC §11.3): the Redis side of `[cluster]`.
//!
//! The cluster's log is one Redis Stream, `<key>:log`. A publish on any hub is one entry,
//! appended by a script that also takes the next seqs from `<key>:seq`, so every event has
//! one place in one order and one id on every hub: the entry's id is `<first seq>-0`, and
//! its events are that seq and the ones after it. Every hub follows the stream with a
//! blocking read and publishes what it reads into its own log and streams (`hub::cluster`),
//! so a hub's sled log is a copy, for replay, of what the cluster published.
//!
//! `<key>:incarnation` is the cluster's incarnation, made by the first hub that finds none:
//! every hub's ids carry it. If Redis loses it (restarted without persistence), its seqs
//! start over, and the script refuses to append under the old one: no id is ever given twice.
//!
//! `<key>:conn:<hub>` holds each hub's open connections, refreshed while it runs and expiring
//! when it stops, so `/connections` covers every hub; `<key>:hubs` names the hubs that wrote one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::config::{ClusterConfig, RedisUrl};

mod record;

use crate::event::NewEvent;
pub use record::Item;
use record::{Rec, first_seq, item_of, rec_of};

/// How long a publish waits for Redis before it is refused.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the follower waits for an answer to a read, which blocks up to 2 s in Redis.
const READER_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends one publish: checks the incarnation, takes `n` seqs, adds the entry.
/// KEYS: log, seq, incarnation. ARGV: incarnation, n, max_len, time, writer, events.
const APPEND: &str = r"
local inc = redis.call('GET', KEYS[3])
if inc ~= ARGV[1] then
  return redis.error_reply('RUNNEL_INCARNATION the cluster incarnation is ' .. tostring(inc))
end
local n = tonumber(ARGV[2])
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n + 1
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], first .. '-0',
  't', ARGV[4], 'w', ARGV[5], 'e', ARGV[6])
return first
";

/// Appends a control entry (a change every hub applies: a session, a connection to close)
/// after the newest event, as `<seq>-<n>`: it takes no seq. KEYS: log, seq, incarnation.
/// ARGV: incarnation, max_len, writer, body.
const CONTROL: &str = r"
local inc = redis.call('GET', KEYS[3])
if inc ~= ARGV[1] then
  return redis.error_reply('RUNNEL_INCARNATION the cluster incarnation is ' .. tostring(inc))
end
local last = redis.call('GET', KEYS[2]) or '0'
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], last .. '-*',
  'c', ARGV[4], 'w', ARGV[3])
";

/// The cluster as one hub sees it: where its keys are, and a connection for publishing.
pub struct Cluster {
    client: redis::Client,
    keys: Keys,
    max_len: u64,
    incarnation: u32,
    /// This hub's name in the cluster: random per process, it tells the hub its own
    /// entries apart (`w`) and names its connection list.
    node: String,
    script: redis::Script,
    control: redis::Script,
    /// Made on first use and after a failure.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    url: String,
    /// Whether the last append failed (its change is logged once, not at every publish).
    failing: AtomicBool,
}

struct Keys {
    log: String,
    seq: String,
    incarnation: String,
    conn_prefix: String,
    /// The set of hubs that published a connection list.
    hubs: String,
}

/// Why Redis did not take or give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "the cluster's incarnation changed in Redis (was its data lost?): restart this hub to join it again"
    )]
    Incarnation,
    #[error("a malformed entry {0} in the cluster's log")]
    Malformed(String),
    #[error("{0}")]
    Hub(String),
}

impl Cluster {
    /// Connects to `[cluster] redis` and learns (or makes) the cluster's incarnation,
    /// retrying until Redis answers: a hub cannot number events without it.
    pub async fn join(
        cfg: &ClusterConfig,
        url: &RedisUrl,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Cluster> {
        let client = client(url.expose(), ca_file).map_err(anyhow::Error::msg)?;
        let keys = Keys {
            log: format!("{}:log", cfg.key),
            seq: format!("{}:seq", cfg.key),
            incarnation: format!("{}:incarnation", cfg.key),
            conn_prefix: format!("{}:conn:", cfg.key),
            hubs: format!("{}:hubs", cfg.key),
        };
        let mut wait = Duration::from_millis(100);
        let mut logged = false;
        let incarnation = loop {
            match incarnation_of(&client, &keys).await {
                Ok(i) => break i,
                Err(e) => {
                    if !logged {
                        tracing::warn!(url = %url.masked(), error = %e,
                            "waiting for the cluster's Redis");
                        logged = true;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        let node = format!("{:08x}", crate::random::random_u32());
        tracing::info!(url = %url.masked(), incarnation = format!("{incarnation:08x}"),
            node = %node, "joined the cluster");
        Ok(Cluster {
            client,
            keys,
            max_len: cfg.max_len,
            incarnation,
            node,
            script: redis::Script::new(APPEND),
            control: redis::Script::new(CONTROL),
            conn: tokio::sync::Mutex::new(None),
            url: url.masked(),
            failing: AtomicBool::new(false),
        })
    }

    /// The cluster's incarnation: every hub's ids carry it.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// This hub's name in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The Redis URL, password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Notes whether Redis answered a script, logging only when that changes.
    fn set_failing(&self, error: Option<&ClusterError>) {
        let was = self.failing.swap(error.is_some(), Ordering::Relaxed);
        match error {
            Some(e) if !was => tracing::warn!(error = %e, "the cluster's Redis refuses publishes"),
            None if was => tracing::info!("the cluster's Redis takes publishes again"),
            _ => {}
        }
    }

    /// A connection for short commands: the one in use, or a new one.
    async fn conn(&self) -> Result<MultiplexedConnection, ClusterError> {
        let mut held = self.conn.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(&self.client, RESPONSE_TIMEOUT).await?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn forget_conn(&self) {
        *self.conn.lock().await = None;
    }

    /// Appends one publish (`writer` names it for this hub) and returns the seq of its
    /// first event. It is in the cluster's log when this returns.
    pub async fn append(
        &self,
        events: &[NewEvent],
        time_ms: u64,
        writer: &str,
    ) -> Result<u64, ClusterError> {
        let recs: Vec<Rec> = events.iter().map(rec_of).collect();
        let body = serde_json::to_string(&recs).unwrap_or_default();
        self.run(&self.script, |s| {
            s.arg(events.len())
                .arg(self.max_len)
                .arg(time_ms)
                .arg(writer)
                .arg(body);
        })
        .await
    }

    /// Appends a control entry (`body`, JSON) that every hub reads after the events
    /// published before it.
    pub async fn append_control(&self, body: &str, writer: &str) -> Result<(), ClusterError> {
        let _id: String = self
            .run(&self.control, |s| {
                s.arg(self.max_len).arg(writer).arg(body);
            })
            .await?;
        Ok(())
    }

    /// Runs one of the scripts that append to the log: the keys and the incarnation they
    /// all take first, then what `args` adds.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, ClusterError> {
        let mut call = script.prepare_invoke();
        call.key(&self.keys.log)
            .key(&self.keys.seq)
            .key(&self.keys.incarnation)
            .arg(self.incarnation.to_string());
        args(&mut call);
        let r = match self.conn().await {
            Ok(mut conn) => match call.invoke_async(&mut conn).await {
                Ok(v) => Ok(v),
                Err(e) => Err(self.failed(e).await),
            },
            Err(e) => Err(e),
        };
        self.set_failing(r.as_ref().err());
        r
    }

    /// What a script's error means; a connection that broke is made again next time.
    async fn failed(&self, e: redis::RedisError) -> ClusterError {
        if e.code() == Some("RUNNEL_INCARNATION") {
            return ClusterError::Incarnation;
        }
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.forget_conn().await;
        }
        e.into()
    }

    /// A connection of its own for [`Cluster::read`] (its reads block), reading on after
    /// the entry holding seq `after` (and any control entries after it).
    pub async fn reader(&self, after: u64) -> Result<Reader, ClusterError> {
        // A read blocks for at most `block` (see `read`): an answer this late means the
        // connection is dead without having said so.
        let conn = connect(&self.client, READER_TIMEOUT).await?;
        // Entries of events are `<first seq>-0`, control entries `<seq>-<n>` (n ≥ 0, after
        // an entry of several events): read from just before `<after>-0`, and skip the
        // events already held.
        let cursor = match after {
            0 => "0-0".to_string(),
            a => format!("{}-{}", a - 1, u64::MAX),
        };
        let mut reader = Reader { conn, cursor };
        let inc = incarnation_on(&mut reader.conn, &self.keys, None).await?;
        if inc != self.incarnation {
            return Err(ClusterError::Incarnation);
        }
        Ok(reader)
    }

    /// The entries after `reader`'s position (then moved past them), waiting up to
    /// `block` for one.
    pub async fn read(
        &self,
        reader: &mut Reader,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Item>, ClusterError> {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.log)
            .arg(&reader.cursor)
            .query_async(&mut reader.conn)
            .await?;
        let ids = reply
            .and_then(|r| r.keys.into_iter().next())
            .map(|k| k.ids)
            .unwrap_or_default();
        if let Some(last) = ids.last() {
            reader.cursor = last.id.clone();
        }
        // An entry no hub wrote is passed over, not retried forever.
        Ok(ids
            .into_iter()
            .filter_map(|e| {
                item_of(e)
                    .inspect_err(|e| tracing::warn!(error = %e, "passed over in the cluster's log"))
                    .ok()
            })
            .collect())
    }

    /// The seq of the first event of the oldest entry the stream still holds (trimming
    /// removes the older ones), or `None` when it is empty.
    pub async fn oldest(&self, reader: &mut Reader) -> Result<Option<u64>, ClusterError> {
        let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.keys.log)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut reader.conn)
            .await?;
        Ok(r.ids.first().and_then(|e| first_seq(&e.id)))
    }

    /// Publishes this hub's connections (a JSON array) for `/connections` on every hub;
    /// they expire after `ttl` unless published again.
    pub async fn put_connections(&self, json: String, ttl: Duration) -> Result<(), ClusterError> {
        let mut conn = self.conn().await?;
        let key = format!("{}{}", self.keys.conn_prefix, self.node);
        let r: redis::RedisResult<()> = redis::pipe()
            .cmd("SADD")
            .arg(&self.keys.hubs)
            .arg(&self.node)
            .ignore()
            .cmd("SET")
            .arg(key)
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .query_async(&mut conn)
            .await;
        if r.is_err() {
            self.forget_conn().await;
        }
        Ok(r?)
    }

    /// Every other hub's connections, as they last published them: (hub, JSON array). A hub
    /// whose list expired (it stopped) is forgotten.
    pub async fn other_connections(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let mut conn = self.conn().await?;
        let mut hubs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&self.keys.hubs)
            .query_async(&mut conn)
            .await?;
        hubs.retain(|h| *h != self.node);
        if hubs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = hubs
            .iter()
            .map(|h| format!("{}{h}", self.keys.conn_prefix))
            .collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let (live, gone): (Vec<_>, Vec<_>) =
            hubs.into_iter().zip(values).partition(|(_, v)| v.is_some());
        if !gone.is_empty() {
            let gone: Vec<String> = gone.into_iter().map(|(h, _)| h).collect();
            let _: redis::RedisResult<usize> = redis::cmd("SREM")
                .arg(&self.keys.hubs)
                .arg(&gone)
                .query_async(&mut conn)
                .await;
        }
        Ok(live
            .into_iter()
            .filter_map(|(h, v)| Some((h, v?)))
            .collect())
    }
}

/// A connection that follows the cluster's log.
pub struct Reader {
    conn: MultiplexedConnection,
    /// The id of the last entry read.
    cursor: String,
}

/// A connection whose commands fail after `response_timeout` without an answer.
async fn connect(
    client: &redis::Client,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The incarnation Redis holds, made from a random one if there is none.
async fn incarnation_of(client: &redis::Client, keys: &Keys) -> Result<u32, ClusterError> {
    let mut conn = connect(client, RESPONSE_TIMEOUT).await?;
    let mut proposed = 0;
    while proposed == 0 {
        proposed = crate::random::random_u32();
    }
    incarnation_on(&mut conn, keys, Some(proposed)).await
}

/// The incarnation in Redis; with `propose`, set to it first if there is none.
async fn incarnation_on(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    propose: Option<u32>,
) -> Result<u32, ClusterError> {
    if let Some(p) = propose {
        let _: Option<String> = redis::cmd("SET")
            .arg(&keys.incarnation)
            .arg(p.to_string())
            .arg("NX")
            .query_async(conn)
            .await?;
    }
    let v: Option<String> = redis::cmd("GET")
        .arg(&keys.incarnation)
        .query_async(conn)
        .await?;
    v.and_then(|v| v.parse().ok())
        .ok_or(ClusterError::Incarnation)
}

/// A Redis client for `url`, trusting the certificates in `ca_file` (PEM) when it is given
/// (the cluster's and the ingress's).
pub(crate) fn client(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<redis::Client, String> {
    if url.starts_with("rediss://") {
        // Redis's TLS is rustls with the provider the hub uses everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let Some(ca) = ca_file else {
        return redis::Client::open(url).map_err(|e| e.to_string());
    };
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(url, certs).map_err(|e| e.to_string())
}

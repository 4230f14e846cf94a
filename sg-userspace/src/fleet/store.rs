//! The policy in etcd: read at one revision, written in one transaction.

use std::{future::Future, time::Duration};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use tonic::Code as tonic_code;

use super::{
    FleetError,
    schema::{KeyDiff, META, PolicyKeys, Schema, is_policy},
};

/// How to reach the store.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub urls: Vec<String>,
    /// Per request, and for connecting.
    pub timeout: Duration,
    /// TLS (`https://` URLs), if given.
    pub tls: Option<Tls>,
}

/// PEM texts: the CA that signed the members' certificates, and this client's certificate and
/// key (etcd's `--client-cert-auth`).
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A connected store under one prefix. It talks to one member at a time and moves to the
/// next when that one is down or has no leader (the client's own balancing sends requests to
/// a dead member and fails them: measured with one member of three killed).
pub struct Store {
    client: Client,
    schema: Schema,
    endpoints: Endpoints,
    /// The member `client` talks to.
    current: usize,
}

/// The policy as read at one revision.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The store's revision the read saw.
    pub revision: i64,
    pub keys: PolicyKeys,
    /// Modification revision of the `meta` key (0: never written by `fleet put`).
    pub meta_mod_revision: i64,
}

/// What a `fleet put` did (or, dry, would do).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PutOutcome {
    pub diff: KeyDiff,
    /// The revision read before writing.
    pub from_revision: i64,
    /// The revision of the transaction; `None` when nothing was written (dry run, no change).
    pub revision: Option<i64>,
}

/// One line for an etcd error (its gRPC status, or why connecting failed).
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut why = s.message().to_string();
            let mut src = std::error::Error::source(s);
            while let Some(inner) = src {
                why = inner.to_string();
                src = inner.source();
            }
            if matches!(s.code(), tonic_code::Cancelled | tonic_code::DeadlineExceeded)
                && why.contains("Timeout")
            {
                return "no answer within the timeout (is a quorum of the members up?)".to_string();
            }
            format!("{}: {why}", s.code().description())
        }
        etcd_client::Error::TransportError(t) => {
            let mut why = t.to_string();
            let mut src = std::error::Error::source(t);
            while let Some(inner) = src {
                why = format!("{why}: {inner}");
                src = inner.source();
            }
            why
        }
        other => other.to_string(),
    }
}

/// Whether another member may answer where this one failed.
fn try_another(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic_code::Unavailable
                    | tonic_code::DeadlineExceeded
                    | tonic_code::Cancelled
                    | tonic_code::Unknown
            )
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

async fn connect_one(ep: &Endpoints, url: &str) -> Result<Client, etcd_client::Error> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(ep.timeout)
        .with_timeout(ep.timeout)
        // A member cut off from the quorum answers with an error, not stale silence.
        .with_require_leader(true);
    let opts = match &ep.tls {
        None => opts,
        Some(t) => {
            let mut tls =
                etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&t.ca));
            if let Some((cert, key)) = &t.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts.with_tls(tls)
        }
    };
    Client::connect([url], Some(opts)).await
}

impl Store {
    /// Connects to the first member that answers (in the order given).
    pub async fn connect(ep: &Endpoints, schema: Schema) -> Result<Store, FleetError> {
        let mut last = None;
        for (i, url) in ep.urls.iter().enumerate() {
            match connect_one(ep, url).await {
                Ok(client) => return Ok(Store { client, schema, endpoints: ep.clone(), current: i }),
                Err(e) => last = Some(e),
            }
        }
        Err(FleetError::Etcd {
            endpoints: ep.urls.join(","),
            why: last.map_or_else(|| "no endpoints given".to_string(), |e| describe(&e)),
        })
    }

    /// Runs `op` on the current member; where it fails as a down or leaderless member
    /// would, on each other member in turn.
    async fn call<T, F, Fut>(&mut self, op: F) -> Result<T, FleetError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.endpoints.urls.len();
        let mut failures = Vec::new();
        for step in 0..n {
            if step > 0 {
                let i = (self.current + 1) % n;
                self.current = i;
                match connect_one(&self.endpoints, &self.endpoints.urls[i]).await {
                    Ok(c) => self.client = c,
                    Err(e) => {
                        failures.push(format!("{}: {}", self.endpoints.urls[i], describe(&e)));
                        continue;
                    }
                }
            }
            match op(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if try_another(&e) => {
                    failures.push(format!("{}: {}", self.endpoints.urls[self.current], describe(&e)));
                }
                Err(e) => {
                    return Err(FleetError::Etcd {
                        endpoints: self.endpoints.urls[self.current].clone(),
                        why: describe(&e),
                    });
                }
            }
        }
        Err(FleetError::Etcd { endpoints: self.endpoints.urls.join(","), why: failures.join("; ") })
    }

    /// A handle on the member this store talks to now (for streams: watch, lease keepalive).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The URL of the member this store talks to now.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints.urls[self.current]
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// One range read (a consistent snapshot) through the failover: everything under the
    /// prefix, or up to `end` (exclusive).
    async fn range(&mut self, end: Option<String>) -> Result<etcd_client::GetResponse, FleetError> {
        let prefix = self.schema.prefix().to_string();
        self.call(|mut c| {
            let prefix = prefix.clone();
            let opts = match &end {
                Some(end) => GetOptions::new().with_range(end.clone()),
                None => GetOptions::new().with_prefix(),
            };
            async move { c.get(prefix, Some(opts)).await }
        })
        .await
    }

    /// Every key under the prefix at one revision: (revision, relative key -> value).
    pub async fn read_all(&mut self) -> Result<(i64, super::schema::AllKeys), FleetError> {
        self.read(None).await
    }

    /// A host's view ([`Schema::view_end`]): every key but the status keys.
    pub async fn read_view(&mut self) -> Result<(i64, super::schema::AllKeys), FleetError> {
        let end = self.schema.view_end();
        self.read(Some(end)).await
    }

    async fn read(&mut self, end: Option<String>) -> Result<(i64, super::schema::AllKeys), FleetError> {
        let resp = self.range(end).await?;
        let mut all = super::schema::AllKeys::new();
        for kv in resp.kvs() {
            if let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str())
                && let Some(rel) = self.schema.rel(k)
            {
                all.insert(rel.to_string(), v.to_string());
            }
        }
        Ok((resp.header().map_or(0, etcd_client::ResponseHeader::revision), all))
    }

    /// Every policy key at one revision (one range read: a consistent snapshot).
    pub async fn read_policy(&mut self) -> Result<Snapshot, FleetError> {
        let end = self.schema.view_end();
        let resp = self.range(Some(end)).await?;
        let mut snap = Snapshot {
            revision: resp.header().map_or(0, etcd_client::ResponseHeader::revision),
            ..Snapshot::default()
        };
        for kv in resp.kvs() {
            let key = kv.key_str().map_err(|e| FleetError::BadKey { key: "?".into(), why: e.to_string() })?;
            let Some(rel) = self.schema.rel(key) else { continue };
            if rel == META {
                snap.meta_mod_revision = kv.mod_revision();
            } else if is_policy(rel) {
                let value =
                    kv.value_str().map_err(|e| FleetError::BadKey { key: key.into(), why: e.to_string() })?;
                snap.keys.insert(rel.to_string(), value.to_string());
            }
        }
        Ok(snap)
    }

    /// Replaces the stored policy by `new` in one transaction that writes only the keys that
    /// change, and only if no other put came between the read and the write.
    pub async fn put_policy(&mut self, new: &PolicyKeys, dry_run: bool) -> Result<PutOutcome, FleetError> {
        let old = self.read_policy().await?;
        let diff = KeyDiff::between(&old.keys, new);
        let mut outcome = PutOutcome { diff, from_revision: old.revision, revision: None };
        if dry_run || outcome.diff.is_empty() {
            return Ok(outcome);
        }
        let mut ops: Vec<TxnOp> = Vec::new();
        for k in outcome.diff.added.iter().chain(&outcome.diff.changed) {
            ops.push(TxnOp::put(self.schema.key(k), new[k].clone(), None));
        }
        for k in &outcome.diff.removed {
            ops.push(TxnOp::delete(self.schema.key(k), None));
        }
        let written_at = crate::clock::now_unix();
        let meta = serde_json::json!({ "keys": new.len(), "written_at": written_at });
        ops.push(TxnOp::put(self.schema.meta(), meta.to_string(), None));
        let n_ops = ops.len();
        let txn = Txn::new()
            .when([Compare::mod_revision(self.schema.meta(), CompareOp::Equal, old.meta_mod_revision)])
            .and_then(ops);
        // Retrying on another member is safe: the compare fails if the first try was applied.
        let resp = self
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| match e {
                FleetError::Etcd { why, .. } if why.contains("too many operations in txn request") => {
                    FleetError::TooManyOps(n_ops)
                }
                e => e,
            })?;
        if !resp.succeeded() {
            return Err(FleetError::Raced);
        }
        outcome.revision = resp.header().map(etcd_client::ResponseHeader::revision);
        Ok(outcome)
    }
}

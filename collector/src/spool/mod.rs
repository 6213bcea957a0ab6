//! The disk spool: where an accepted beacon's rows live from its 202 until ClickHouse has them.
//!
//! # The path of a record
//! 1. Ingest encodes a beacon's rows as one record and [`Spool::append`]s it. The record goes to
//!    the committer thread, which writes every record waiting at that moment in one `redb` write
//!    transaction and commits it durably (fsync): concurrent requests share one sync (group
//!    commit). Only then does ingest answer 202.
//! 2. The shipper ([`crate::storage::writer`]) reads records in key order ([`Spool::read`]),
//!    inserts their rows into ClickHouse and, once ClickHouse has confirmed, removes them
//!    ([`Spool::remove_through`]) — that removal is the persisted cursor. At start, whatever is
//!    still in the spool is shipped first (oldest first), so nothing acknowledged is lost to a
//!    crash, a ClickHouse outage or a restart. Delivery is at least once: a crash between the
//!    insert and the removal ships those records again (see `insert_deduplication_token`).
//! 3. A full spool (`spool_max_bytes`) refuses new records; ingest answers 503 with `Retry-After`.
//!    Each configured site has a reserve ([`Spool::share_among`]): half of an equal share,
//!    `spool_max_bytes / sites / 2`, that no other site may take; the rest is shared first come.
//!    So a busy site can use most of the spool during an outage, yet one site's flood never
//!    refuses another site's beacons.
//! 4. A failed commit (full disk, I/O error) refuses its requests (ingest answers 503) and closes
//!    the database, which redb requires after an I/O error; the committer opens it again with
//!    backoff, recovering the counts and the next key from the file as at start, so appends work
//!    again once the disk does, without a restart.
//!
//! # Record format (the value; the key is a sequence number that never repeats)
//! `[format: u8 = 4][received_ms: u64 LE][rows: u32 LE][crc32: u32 LE][site length: u8][site]
//! [payload]`, the CRC covering everything after it and the payload being the rows as `postcard`
//! with each beacon's envelope stored once ([`packed`]). The site in the header lets the spool
//! account each site's bytes without decoding rows. `redb` keeps each commit atomic and
//! checksummed; the record's own CRC catches a damaged value that still reads, so a bad record is
//! skipped, counted and logged instead of stopping the shipper.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::storage::rows::Batch;

mod packed;

/// Records by sequence number.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Intact records this collector could not read (another format version), kept for a collector
/// that can.
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");
/// Small facts that must survive restarts: the next sequence number, the spool's id, and the
/// key range of the batch being inserted (so a retry after a crash sends the same batch).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The record format written. Formats 1 (rows before `seq`), 2 (API calls before `seq`) and 3
/// (every row with its own envelope, no site in the header) are still read.
const FORMAT: u8 = 5;
const HEADER_BYTES: usize = 1 + 8 + 4 + 4;
/// Encoded records waiting for the committer, at most (a memory bound under overload: beyond it
/// ingest answers 503 at once instead of queueing).
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// Most records in one commit.
const MAX_GROUP: usize = 4096;
/// How long the committer waits for more requests when the last commit was shared (the bounded
/// wait of group commit).
const GROUP_WAIT: Duration = Duration::from_millis(2);

/// A record read back from the spool.
#[derive(Debug)]
pub struct Record {
    pub key: u64,
    pub received_ms: u64,
    /// The decoded rows, or why they could not be decoded.
    pub batch: Result<Batch, String>,
    /// Stored size in bytes.
    pub bytes: u64,
    pub rows: u64,
    /// The CRC-32 of the rows as stored.
    pub crc: u32,
    /// The record is intact but this collector cannot read it (another format version): it is
    /// moved to the spool's quarantine table rather than deleted.
    pub foreign: bool,
}

/// What the spool holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub records: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Receive time of the oldest record, epoch ms.
    pub oldest_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({bytes} of {max} bytes)")]
    Full { bytes: u64, max: u64 },
    #[error("site {site} may take no more of the spool ({bytes} bytes held; the rest is other sites' reserve of {reserve} each)")]
    ShareFull { site: String, bytes: u64, reserve: u64 },
    #[error("too many beacons are waiting for the disk")]
    Busy,
    #[error("the spool is closed")]
    Closed,
    #[error("cannot open the spool at {0}: {1}")]
    Open(PathBuf, String),
    #[error("spool storage error: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Storage(e.to_string())
}

enum Request {
    Append { record: Vec<u8>, rows: u64, done: oneshot::Sender<Result<u64, SpoolError>> },
    Remove { through: u64, quarantine: Vec<u64>, done: oneshot::Sender<Result<(), SpoolError>> },
    MarkInflight { range: Option<(u64, u64)>, done: oneshot::Sender<Result<(), SpoolError>> },
}

/// Counters kept beside the database so `/healthz` and the full check need no transaction.
#[derive(Debug, Default)]
struct Totals {
    records: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Encoded records in flight to the committer (reserved against `max_bytes` too).
    reserved: AtomicU64,
    /// The last append was refused for want of space (cleared by the next commit).
    full: std::sync::atomic::AtomicBool,
    /// The last commit failed (a disk error); cleared by the next successful commit.
    failed: Mutex<Option<String>>,
    /// Bytes each site holds (stored and reserved), by the site in each record's header.
    sites: Mutex<std::collections::HashMap<String, u64>>,
}

impl Totals {
    /// Adds (or with `add = false` takes away) a record's bytes from its site's.
    fn account_record(&self, record: &[u8], add: bool) {
        self.account(header_site(record), record.len() as u64, add);
    }

    fn account(&self, site: Option<&str>, bytes: u64, add: bool) {
        let Some(site) = site else { return };
        let Ok(mut sites) = self.sites.lock() else { return };
        if add {
            *sites.entry(site.to_owned()).or_default() += bytes;
        } else if let Some(held) = sites.get_mut(site) {
            *held = held.saturating_sub(bytes);
        }
    }
}

/// Group-commit figures, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub micros: AtomicU64,
}

/// A handle on the spool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

/// The open database, `None` while the committer reopens it after a disk error.
type Slot = std::sync::RwLock<Option<Arc<Database>>>;

#[derive(Debug)]
struct Inner {
    db: Arc<Slot>,
    path: PathBuf,
    id: String,
    max_bytes: u64,
    totals: Arc<Totals>,
    /// Sender to the committer; `None` once closed.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    pending: Arc<Semaphore>,
    /// Woken after every commit that added records.
    pub appended: Arc<Notify>,
    pub commit_stats: Arc<CommitStats>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    salvage: Option<Salvage>,
    /// The sites sharing the spool fairly (none: no shares, only the total limit).
    shared_by: Mutex<Vec<String>>,
}

/// What happened when the spool file could not be opened as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// Where the damaged file was moved (kept for inspection).
    pub moved_to: PathBuf,
    /// Why `redb` refused it.
    pub why: String,
    /// Bytes cut from its end to make it readable.
    pub cut_bytes: u64,
    /// Records copied into the new spool.
    pub records: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and starts its committer thread. `capacity` is the
    /// most records that may wait for a commit.
    pub fn open(dir: &Path, max_bytes: u64, capacity: usize) -> Result<Spool, SpoolError> {
        Spool::open_with(dir, max_bytes, capacity, true)
    }

    /// [`Spool::open`], choosing whether commits are synced to disk (`fsync = false` only for
    /// measuring what durability costs).
    pub fn open_with(dir: &Path, max_bytes: u64, capacity: usize, fsync: bool) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Open(dir.to_owned(), e.to_string()))?;
        let path = dir.join("spool.redb");
        finish_salvage(&path).map_err(|e| SpoolError::Open(path.clone(), e.to_string()))?;
        let (db, salvage) = match Database::create(&path) {
            Ok(db) => (db, None),
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(why))) => {
                let (db, report) = salvage(&path, &why).map_err(|e| SpoolError::Open(path.clone(), e.to_string()))?;
                (db, Some(report))
            }
            Err(e) => return Err(SpoolError::Open(path.clone(), e.to_string())),
        };
        let (id, next_key, totals) = recover(&db).map_err(|e| SpoolError::Open(path.clone(), e.to_string()))?;
        let db: Arc<Slot> = Arc::new(std::sync::RwLock::new(Some(Arc::new(db))));
        let totals = Arc::new(totals);
        let appended = Arc::new(Notify::new());
        let commit_stats = Arc::new(CommitStats::default());
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let committer = {
            let (db, totals, appended, stats) = (db.clone(), totals.clone(), appended.clone(), commit_stats.clone());
            let file = path.clone();
            std::thread::Builder::new()
                .name("pulse-spool".into())
                .spawn(move || commit_loop(&db, &file, rx, next_key, fsync, &totals, &appended, &stats))
                .map_err(|e| SpoolError::Open(path.clone(), e.to_string()))?
        };
        Ok(Spool {
            inner: Arc::new(Inner {
                db,
                path,
                id,
                max_bytes,
                totals,
                requests: Mutex::new(Some(tx)),
                pending: Arc::new(Semaphore::new(MAX_PENDING_BYTES)),
                appended,
                commit_stats,
                committer: Mutex::new(Some(committer)),
                salvage,
                shared_by: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Gives each of these sites a reserve of the spool, half of an equal share: a site may always
    /// hold up to `max_bytes / sites / 2`, and more only while the free space left still covers
    /// what every other site's reserve has not used.
    pub fn share_among(&self, sites: Vec<String>) {
        if let Ok(mut shared_by) = self.inner.shared_by.lock() {
            *shared_by = sites;
        }
    }

    /// Bytes each site holds in the spool (records of formats before 4 are not counted).
    pub fn site_bytes(&self) -> Vec<(String, u64)> {
        let Ok(sites) = self.inner.totals.sites.lock() else { return Vec::new() };
        let mut out: Vec<(String, u64)> = sites.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort();
        out
    }

    /// Whether `site` may add `size` bytes, held by now `held` in all (stored and reserved).
    /// Counts `size` more bytes for `site` if it may take them: checked and counted under one
    /// lock, so concurrent appends of one site cannot all pass on the same count.
    fn take_share(&self, site: &str, size: u64, held: u64) -> Result<(), SpoolError> {
        let shared_by = self.inner.shared_by.lock().map_err(storage)?;
        let mut sites = self.inner.totals.sites.lock().map_err(storage)?;
        let mine = sites.get(site).copied().unwrap_or(0);
        if shared_by.len() >= 2 {
            let max = self.inner.max_bytes;
            let reserve = max / shared_by.len() as u64 / 2;
            // Past its reserve a site takes only space no other site's reserve still needs.
            let unused_by_others: u64 =
                shared_by.iter().filter(|s| s.as_str() != site).map(|s| reserve.saturating_sub(sites.get(s).copied().unwrap_or(0))).sum();
            if mine + size > reserve && held + unused_by_others > max {
                return Err(SpoolError::ShareFull { site: site.to_owned(), bytes: mine, reserve });
            }
        }
        sites.insert(site.to_owned(), mine + size);
        Ok(())
    }

    /// Set when the spool file was damaged at open and its records were copied into a new one.
    pub fn salvage(&self) -> Option<&Salvage> {
        self.inner.salvage.as_ref()
    }

    /// The spool's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A random id made when the spool was created (part of the insert deduplication tokens).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.inner.commit_stats
    }

    /// Woken after each commit that added records.
    pub fn appended(&self) -> &Notify {
        &self.inner.appended
    }

    /// Whether the last append was refused because the spool is full (until records are added
    /// or removed again).
    pub fn is_full(&self) -> bool {
        self.inner.totals.full.load(Ordering::Acquire)
    }

    /// The error of the last commit, when it failed (a disk error: full disk, I/O error), until a
    /// commit succeeds again. redb refuses every later transaction after an I/O error, so the
    /// committer closes the database and opens it again (with backoff) until the disk lets it.
    pub fn failure(&self) -> Option<String> {
        self.inner.totals.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Whether [`Spool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.requests.lock().map_or(true, |tx| tx.is_none())
    }

    /// The open database, or why there is none now (reopening after a disk error).
    fn db(&self) -> Result<Arc<Database>, SpoolError> {
        let slot = self.inner.db.read().map_err(storage)?;
        slot.clone().ok_or_else(|| SpoolError::Storage("the spool is being reopened after a disk error".into()))
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>, SpoolError> {
        self.inner.requests.lock().map_err(storage)?.clone().ok_or(SpoolError::Closed)
    }

    /// Stores one beacon's rows durably; returns once they are synced to disk.
    pub async fn append(&self, batch: &Batch, received_ms: u64) -> Result<(), SpoolError> {
        let tx = self.sender()?;
        let record = encode(batch, received_ms);
        let size = record.len() as u64;
        let totals = &self.inner.totals;
        let reserved = totals.reserved.fetch_add(size, Ordering::AcqRel) + size;
        let site = header_site(&record).map(str::to_owned);
        let release = || {
            totals.reserved.fetch_sub(size, Ordering::AcqRel);
            totals.account(site.as_deref(), size, false);
        };
        let held = totals.bytes.load(Ordering::Acquire) + reserved;
        if held > self.inner.max_bytes {
            totals.reserved.fetch_sub(size, Ordering::AcqRel);
            totals.full.store(true, Ordering::Release);
            return Err(SpoolError::Full { bytes: held - size, max: self.inner.max_bytes });
        }
        if let Some(site) = site.as_deref() {
            if let Err(e) = self.take_share(site, size, held) {
                totals.reserved.fetch_sub(size, Ordering::AcqRel);
                return Err(e);
            }
        }
        let permits = u32::try_from(record.len()).unwrap_or(u32::MAX);
        let Ok(_permit) = self.inner.pending.clone().try_acquire_many_owned(permits) else {
            release();
            return Err(SpoolError::Busy);
        };
        let (done, answer) = oneshot::channel();
        if let Err(e) = tx.try_send(Request::Append { record, rows: batch.len() as u64, done }) {
            release();
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => SpoolError::Busy,
                mpsc::error::TrySendError::Closed(_) => SpoolError::Closed,
            });
        }
        // From here the committer owns the reservation: it turns it into stored bytes (or
        // gives it back) at commit, also when this request is abandoned (the client went away).
        answer.await.unwrap_or(Err(SpoolError::Closed)).map(|_| ())
    }

    /// Removes every record up to and including `through` (they are in ClickHouse), moving the
    /// `quarantine` ones to the quarantine table, and clears the in-flight mark, in one durable
    /// commit.
    pub async fn remove_through(&self, through: u64, quarantine: Vec<u64>) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        self.sender()?.send(Request::Remove { through, quarantine, done }).await.map_err(|_| SpoolError::Closed)?;
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Records (durably) the key range about to be inserted, or clears it.
    pub async fn mark_inflight(&self, range: Option<(u64, u64)>) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        self.sender()?.send(Request::MarkInflight { range, done }).await.map_err(|_| SpoolError::Closed)?;
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// The in-flight range left by the previous run, if it stopped between an insert and the
    /// removal of its records.
    pub fn inflight(&self) -> Result<Option<(u64, u64)>, SpoolError> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        Ok(meta.get("inflight").map_err(storage)?.and_then(|v| decode_range(v.value())))
    }

    /// Reads records in key order after `after` (all when `None`), up to `max_rows` rows (at
    /// least one record) or through `until` when given.
    pub fn read(&self, after: Option<u64>, max_rows: u64, until: Option<u64>) -> Result<Vec<Record>, SpoolError> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let table = txn.open_table(RECORDS).map_err(storage)?;
        let start = after.map_or(0, |k| k.saturating_add(1));
        let mut out = Vec::new();
        let mut rows = 0u64;
        for entry in table.range(start..).map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            let key = key.value();
            if until.is_some_and(|u| key > u) {
                break;
            }
            let record = decode(key, value.value());
            if until.is_none() && !out.is_empty() && rows + record.rows > max_rows {
                break;
            }
            rows += record.rows;
            out.push(record);
        }
        Ok(out)
    }

    /// What the spool holds, with the oldest record's receive time (reads the database).
    pub fn stats(&self) -> SpoolStats {
        SpoolStats { oldest_ms: self.oldest_ms(), ..self.stats_fast() }
    }

    /// What the spool holds, from the counters alone (`oldest_ms` is `None`).
    pub fn stats_fast(&self) -> SpoolStats {
        let t = &self.inner.totals;
        SpoolStats {
            records: t.records.load(Ordering::Acquire),
            rows: t.rows.load(Ordering::Acquire),
            bytes: t.bytes.load(Ordering::Acquire),
            oldest_ms: None,
        }
    }

    fn oldest_ms(&self) -> Option<u64> {
        let txn = self.db().ok()?.begin_read().ok()?;
        let table = txn.open_table(RECORDS).ok()?;
        let (key, value) = table.first().ok()??;
        Some(decode(key.value(), value.value()).received_ms)
    }

    /// Refuses new records and waits for the committer to finish what it was given.
    pub fn close(&self) {
        if let Ok(mut tx) = self.inner.requests.lock() {
            tx.take();
        }
        let handle = self.inner.committer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the spool's committer thread panicked");
            }
        }
    }
}

/// Page size of the spool file: `redb` only ever sizes its file in whole pages.
const PAGE: u64 = 4096;
/// How far back from the end a readable prefix of a damaged file is looked for.
const SALVAGE_MAX_CUT: u64 = 16 << 20;

/// A spool file `redb` refuses (a torn tail: bytes past the last layout it wrote, as a crash while
/// the file grew can leave): it is moved aside, the longest prefix `redb` accepts is found, and its
/// records (and meta, so keys never repeat) are copied into a new spool file. With no readable
/// prefix the new spool starts empty and the damaged file stays for inspection.
fn salvage(path: &Path, why: &str) -> Result<(Database, Salvage), Box<dyn std::error::Error>> {
    tracing::error!(path = %path.display(), %why, "the spool file is damaged; salvaging its records");
    // Crash-safe order: the salvaged copy is built and committed beside the damaged file; then
    // the damaged file gets a second name and the copy replaces it in one atomic rename, so
    // `spool.redb` exists at every moment: a crash leaves the damaged file (salvaged again at
    // the next start) or the salvaged one, never no spool (a new empty one would be created,
    // and the salvaged records left unread).
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let moved_to = path.with_extension(format!("redb.damaged-{stamp}"));
    let probe = path.with_extension("redb.probe");
    let salvaging = path.with_extension("redb.salvaging");
    let _ = std::fs::remove_file(&salvaging);
    let len = std::fs::metadata(path)?.len();
    let mut report = Salvage { moved_to: moved_to.clone(), why: why.to_owned(), cut_bytes: 0, records: 0 };
    {
        let fresh = Database::create(&salvaging)?;
        // One copy, cut shorter page by page (a failed open does not write to the file).
        std::fs::copy(path, &probe)?;
        let mut candidate = len / PAGE * PAGE;
        while candidate > 0 && len - candidate <= SALVAGE_MAX_CUT {
            std::fs::OpenOptions::new().write(true).open(&probe)?.set_len(candidate)?;
            if let Ok(old) = Database::create(&probe) {
                report.cut_bytes = len - candidate;
                report.records = copy_spool(&old, &fresh)?;
                break;
            }
            candidate -= PAGE;
        }
        let _ = std::fs::remove_file(&probe);
    }
    if std::fs::hard_link(path, &moved_to).is_err() {
        // A file system without hard links: a copy serves for inspection as well.
        std::fs::copy(path, &moved_to)?;
    }
    std::fs::rename(&salvaging, path)?;
    sync_dir(path)?;
    if report.records == 0 && report.cut_bytes == 0 {
        tracing::error!(moved_to = %moved_to.display(), "no readable prefix found; the spool starts empty");
    } else {
        tracing::warn!(records = report.records, cut_bytes = report.cut_bytes, moved_to = %moved_to.display(), "spool salvaged");
    }
    Ok((Database::create(path)?, report))
}

/// Finishes a salvage that a crash interrupted between moving the damaged file away and moving
/// the salvaged copy in (as collectors before the atomic replace in [`salvage`] could leave it):
/// with no `spool.redb` but a `spool.redb.salvaging`, the copy is the spool. (A copy left beside
/// a `spool.redb` may be incomplete; the salvage starts over and removes it.)
fn finish_salvage(path: &Path) -> std::io::Result<()> {
    let salvaging = path.with_extension("redb.salvaging");
    if !path.try_exists()? && salvaging.try_exists()? {
        tracing::warn!(path = %path.display(), "a salvage was interrupted; its copy becomes the spool");
        std::fs::rename(&salvaging, path)?;
        sync_dir(path)?;
    }
    Ok(())
}

/// Makes renames in the directory of `path` durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        // Directories cannot be opened as files on Windows; there a rename is durable by itself.
        Some(dir) if cfg!(unix) => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

fn copy_spool(from: &Database, to: &Database) -> Result<u64, Box<dyn std::error::Error>> {
    let read = from.begin_read()?;
    let txn = to.begin_write()?;
    let mut n = 0;
    {
        let mut records = txn.open_table(RECORDS)?;
        if let Ok(old) = read.open_table(RECORDS) {
            for entry in old.iter()? {
                let (key, value) = entry?;
                records.insert(key.value(), value.value())?;
                n += 1;
            }
        }
        let mut meta = txn.open_table(META)?;
        if let Ok(old) = read.open_table(META) {
            for entry in old.iter()? {
                let (key, value) = entry?;
                meta.insert(key.value(), value.value())?;
            }
        }
    }
    txn.commit()?;
    Ok(n)
}

/// The row count a record's header states (0 for a value shorter than a header).
fn header_rows(value: &[u8]) -> u64 {
    value.get(9..13).and_then(|b| b.try_into().ok()).map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

/// The site a record's header names (from format 4; `None` for older formats and damaged headers).
fn header_site(value: &[u8]) -> Option<&str> {
    if !value.first().is_some_and(|format| (4..=FORMAT).contains(format)) {
        return None;
    }
    let len = usize::from(*value.get(HEADER_BYTES)?);
    std::str::from_utf8(value.get(HEADER_BYTES + 1..HEADER_BYTES + 1 + len)?).ok()
}

/// The site a record is accounted to: its first row's (ingest writes one beacon per record).
fn batch_site(batch: &Batch) -> &str {
    let site = batch.metrics.first().map(|m| m.site.as_str()).or_else(|| batch.api_calls.first().map(|a| a.site.as_str()));
    let site = site.unwrap_or("");
    // Site keys are at most 64 bytes (the wire format's rule); a longer one is cut at a char.
    let mut end = site.len().min(255);
    while !site.is_char_boundary(end) {
        end -= 1;
    }
    &site[..end]
}

fn encode(batch: &Batch, received_ms: u64) -> Vec<u8> {
    // One buffer on the ingest path: the header, then the rows encoded straight after it, then
    // the checksum written into the header.
    let site = batch_site(batch);
    let mut record = Vec::with_capacity(HEADER_BYTES + 1 + site.len() + 64 * batch.len() + 512);
    record.push(FORMAT);
    record.extend_from_slice(&received_ms.to_le_bytes());
    record.extend_from_slice(&u32::try_from(batch.len()).unwrap_or(u32::MAX).to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.push(site.len() as u8);
    record.extend_from_slice(site.as_bytes());
    // Encoding plain structs into a Vec cannot fail; an empty payload would be caught at decode.
    let record = postcard::to_extend(&packed::pack(batch), record).unwrap_or_default();
    let mut record = postcard::to_extend(&packed::orders(batch), record).unwrap_or_default();
    if record.len() >= HEADER_BYTES {
        let crc = crc32fast::hash(&record[HEADER_BYTES..]);
        record[13..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }
    record
}

/// Decodes a stored record; a damaged or foreign one comes back with an error in `batch`.
pub fn decode(key: u64, value: &[u8]) -> Record {
    let bytes = value.len() as u64;
    let bad = |why: String| Record { key, received_ms: 0, batch: Err(why), bytes, rows: 0, crc: 0, foreign: false };
    if value.len() < HEADER_BYTES {
        return bad(format!("record of {} bytes is shorter than its header", value.len()));
    }
    let (header, payload) = value.split_at(HEADER_BYTES);
    if !(1..=FORMAT).contains(&header[0]) {
        return Record { foreign: true, ..bad(format!("unknown record format {}", header[0])) };
    }
    let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or_default());
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap_or_default());
    let (received_ms, rows, crc) = (u64_at(1), header_rows(value), u32_at(13));
    if crc32fast::hash(payload) != crc {
        return Record { received_ms, rows, crc, ..bad("checksum mismatch".into()) };
    }
    let decoded = match header[0] {
        1 => postcard::from_bytes::<crate::storage::rows::v1::Batch>(payload).map(|b| b.upgrade(received_ms)).map_err(|e| e.to_string()),
        2 => postcard::from_bytes::<crate::storage::rows::v2::Batch>(payload).map(|b| b.upgrade(received_ms)).map_err(|e| e.to_string()),
        3 => postcard::from_bytes::<crate::storage::rows::v3::Batch>(payload).map(|b| b.upgrade()).map_err(|e| e.to_string()),
        _ => {
            // The site's length and bytes, then the packed rows.
            let rows = payload.split_first().and_then(|(len, rest)| rest.get(usize::from(*len)..));
            match rows {
                Some(rows) if header[0] == 4 => {
                    postcard::from_bytes::<packed::Packed<String>>(rows).map_err(|e| e.to_string()).and_then(|p| packed::unpack(p, &[]))
                }
                Some(rows) => postcard::take_from_bytes::<packed::Packed<String>>(rows)
                    .and_then(|(p, rest)| Ok((p, postcard::from_bytes::<Vec<packed::Order>>(rest)?)))
                    .map_err(|e| e.to_string())
                    .and_then(|(p, orders)| packed::unpack(p, &orders)),
                None => Err("the site in the header is cut short".to_owned()),
            }
        }
    };
    match decoded {
        Ok(batch) => Record { key, received_ms, rows: batch.len() as u64, batch: Ok(batch), bytes, crc, foreign: false },
        // Intact (the checksum holds) but not readable as this version's rows.
        Err(e) => Record { received_ms, rows, crc, foreign: true, ..bad(format!("undecodable rows: {e}")) },
    }
}

fn encode_range(range: (u64, u64)) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&range.0.to_le_bytes());
    out[8..].copy_from_slice(&range.1.to_le_bytes());
    out
}

fn decode_range(value: &[u8]) -> Option<(u64, u64)> {
    let first = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let last = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((first, last))
}

/// Reads the spool's id, next key and totals at start (one pass over the records).
fn recover(db: &Database) -> Result<(String, u64, Totals), Box<dyn std::error::Error>> {
    let txn = db.begin_write()?;
    let id;
    let mut next_key;
    let totals = Totals::default();
    {
        let mut meta = txn.open_table(META)?;
        let stored_id = meta.get("id")?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
        id = match stored_id {
            Some(id) => id,
            None => {
                let id = new_id();
                meta.insert("id", id.as_bytes())?;
                id
            }
        };
        next_key = meta.get("next_key")?.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)).unwrap_or(0);
        let records = txn.open_table(RECORDS)?;
        for entry in records.iter()? {
            let (key, value) = entry?;
            let value = value.value();
            let rows = header_rows(value);
            totals.records.fetch_add(1, Ordering::Relaxed);
            totals.rows.fetch_add(rows, Ordering::Relaxed);
            totals.bytes.fetch_add(value.len() as u64, Ordering::Relaxed);
            totals.account_record(value, true);
            next_key = next_key.max(key.value() + 1);
        }
        debug_assert_eq!(records.len()?, totals.records.load(Ordering::Relaxed));
    }
    txn.commit()?;
    Ok((id, next_key, totals))
}

/// 16 hex characters from the system's randomness (the std hasher's random keys) and the clock.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// First and longest wait between attempts to reopen the database after a disk error.
const FIRST_REOPEN_WAIT: Duration = Duration::from_millis(100);
const MAX_REOPEN_WAIT: Duration = Duration::from_secs(5);

/// Closes the database after a failed commit (redb refuses every later transaction after an
/// I/O error) and opens it again when the disk lets it, recovering the totals and the next key
/// as at start (a commit reported failed may still have reached the disk: the file says).
struct Reopen {
    /// When to try next (`None`: the database is open).
    due: Option<Instant>,
    wait: Duration,
}

impl Reopen {
    fn close(&mut self, slot: &Slot) {
        if let Ok(mut db) = slot.write() {
            // Dropped here or when the last reader is done with it.
            db.take();
        }
        self.due = Some(Instant::now());
    }

    /// Tries to reopen when due; `Err` while the database is still closed.
    fn ensure_open(&mut self, slot: &Slot, path: &Path, totals: &Totals, next_key: &mut u64) -> Result<(), String> {
        let Some(due) = self.due else { return Ok(()) };
        if Instant::now() < due {
            return Err("the spool is being reopened after a disk error".into());
        }
        let opened = Database::create(path).map_err(|e| e.to_string()).and_then(|db| {
            let recovered = recover(&db).map_err(|e| e.to_string())?;
            Ok((db, recovered))
        });
        match opened {
            Ok((db, (_, recovered_next, recovered))) => {
                *next_key = (*next_key).max(recovered_next);
                for (mine, theirs) in
                    [(&totals.records, &recovered.records), (&totals.rows, &recovered.rows), (&totals.bytes, &recovered.bytes)]
                {
                    mine.store(theirs.load(Ordering::Acquire), Ordering::Release);
                }
                // Each site's bytes are left as counted: they are the file's records (a failed
                // commit gave its own back) plus the appends still queued, which the file does not
                // hold yet.
                if let Ok(mut db_slot) = slot.write() {
                    *db_slot = Some(Arc::new(db));
                }
                tracing::warn!(path = %path.display(), "spool reopened after a disk error");
                *self = Reopen { due: None, wait: FIRST_REOPEN_WAIT };
                Ok(())
            }
            Err(err) => {
                tracing::error!(%err, retry_in_ms = self.wait.as_millis() as u64, "cannot reopen the spool yet");
                self.due = Some(Instant::now() + self.wait);
                self.wait = (self.wait * 2).min(MAX_REOPEN_WAIT);
                Err(format!("cannot reopen the spool: {err}"))
            }
        }
    }
}

/// The committer: one write transaction per group of waiting requests.
#[allow(clippy::too_many_arguments)] // one thread's whole context, passed once
fn commit_loop(
    slot: &Slot,
    path: &Path,
    mut rx: mpsc::Receiver<Request>,
    mut next_key: u64,
    fsync: bool,
    totals: &Totals,
    appended: &Notify,
    stats: &CommitStats,
) {
    let mut group = Vec::new();
    let mut busy = false;
    let mut reopen = Reopen { due: None, wait: FIRST_REOPEN_WAIT };
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        if busy {
            // Under concurrent load, a moment's wait gathers more requests into this commit:
            // fewer, larger commits cost the disk and redb's page copying far less per beacon.
            std::thread::sleep(GROUP_WAIT);
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        busy = group.len() > 1;
        let started = Instant::now();
        let outcome = reopen.ensure_open(slot, path, totals, &mut next_key).map_err(Box::<dyn std::error::Error>::from).and_then(|()| {
            let db = slot.read().ok().and_then(|db| db.clone()).ok_or("the spool is not open")?;
            let outcome = commit(&db, &group, next_key, fsync);
            if outcome.is_err() {
                drop(db);
                reopen.close(slot);
            }
            outcome
        });
        let elapsed = started.elapsed();
        match outcome {
            Ok(applied) => {
                next_key = applied.next_key;
                totals.records.fetch_add(applied.added_records, Ordering::AcqRel);
                totals.rows.fetch_add(applied.added_rows, Ordering::AcqRel);
                totals.bytes.fetch_add(applied.added_bytes, Ordering::AcqRel);
                totals.reserved.fetch_sub(applied.added_bytes, Ordering::AcqRel);
                if let Ok(mut failed) = totals.failed.lock() {
                    *failed = None;
                }
                totals.records.fetch_sub(applied.removed_records, Ordering::AcqRel);
                totals.rows.fetch_sub(applied.removed_rows, Ordering::AcqRel);
                totals.bytes.fetch_sub(applied.removed_bytes, Ordering::AcqRel);
                for (site, bytes) in &applied.removed_by_site {
                    totals.account(Some(site), *bytes, false);
                }
                if applied.added_records > 0 || applied.removed_records > 0 {
                    totals.full.store(false, Ordering::Release);
                }
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.records.fetch_add(applied.added_records, Ordering::Relaxed);
                stats.micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                let mut key = applied.first_key;
                for request in group.drain(..) {
                    match request {
                        Request::Append { done, .. } => {
                            let _ = done.send(Ok(key));
                            key += 1;
                        }
                        Request::Remove { done, .. } | Request::MarkInflight { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
                if applied.added_records > 0 {
                    appended.notify_one();
                }
            }
            Err(err) => {
                tracing::error!(%err, requests = group.len(), "spool commit failed; the requests are refused");
                if let Ok(mut failed) = totals.failed.lock() {
                    *failed = Some(err.to_string());
                }
                let reserved: u64 =
                    group.iter().map(|r| if let Request::Append { record, .. } = r { record.len() as u64 } else { 0 }).sum();
                totals.reserved.fetch_sub(reserved, Ordering::AcqRel);
                for request in &group {
                    if let Request::Append { record, .. } = request {
                        totals.account_record(record, false);
                    }
                }
                for request in group.drain(..) {
                    let e = || SpoolError::Storage(err.to_string());
                    match request {
                        Request::Append { done, .. } => {
                            let _ = done.send(Err(e()));
                        }
                        Request::Remove { done, .. } | Request::MarkInflight { done, .. } => {
                            let _ = done.send(Err(e()));
                        }
                    }
                }
                // A failing disk: do not spin.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[derive(Default)]
struct Applied {
    first_key: u64,
    next_key: u64,
    added_records: u64,
    added_rows: u64,
    added_bytes: u64,
    removed_records: u64,
    removed_rows: u64,
    removed_bytes: u64,
    removed_by_site: std::collections::HashMap<String, u64>,
}

fn commit(db: &Database, group: &[Request], next_key: u64, fsync: bool) -> Result<Applied, Box<dyn std::error::Error>> {
    let mut txn = db.begin_write()?;
    if !fsync {
        txn.set_durability(redb::Durability::None)?;
    }
    let mut applied = Applied { first_key: next_key, next_key, ..Applied::default() };
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut meta = txn.open_table(META)?;
        for request in group {
            match request {
                Request::Append { record, rows, .. } => {
                    records.insert(applied.next_key, record.as_slice())?;
                    applied.next_key += 1;
                    applied.added_records += 1;
                    applied.added_rows += rows;
                    applied.added_bytes += record.len() as u64;
                }
                Request::Remove { through, quarantine, .. } => {
                    if !quarantine.is_empty() {
                        let mut kept = txn.open_table(QUARANTINE)?;
                        for key in quarantine {
                            if let Some(value) = records.get(*key)? {
                                let value = value.value().to_vec();
                                kept.insert(*key, value.as_slice())?;
                            }
                        }
                    }
                    let (mut n, mut rows, mut bytes) = (0u64, 0u64, 0u64);
                    records.retain_in(..=*through, |_, value| {
                        n += 1;
                        bytes += value.len() as u64;
                        rows += header_rows(value);
                        if let Some(site) = header_site(value) {
                            *applied.removed_by_site.entry(site.to_owned()).or_default() += value.len() as u64;
                        }
                        false
                    })?;
                    applied.removed_records += n;
                    applied.removed_rows += rows;
                    applied.removed_bytes += bytes;
                    meta.remove("inflight")?;
                }
                Request::MarkInflight { range, .. } => match range {
                    Some(range) => {
                        meta.insert("inflight", encode_range(*range).as_slice())?;
                    }
                    None => {
                        meta.remove("inflight")?;
                    }
                },
            }
        }
        if applied.next_key != next_key {
            meta.insert("next_key", applied.next_key.to_le_bytes().as_slice())?;
        }
    }
    txn.commit()?;
    Ok(applied)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::rows::{ApiCallRow, MetricRow};

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pulse-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn metric(value: f64) -> MetricRow {
        MetricRow {
            site: "demo".into(),
            event_time: 1_800_000_000,
            received_at: 1_800_000_000,
            name: "LCP".into(),
            value,
            delta: value,
            rating: 1,
            metric_id: format!("v-{value}"),
            session: "s".into(),
            page: "p".into(),
            url: "/".into(),
            nav: "navigate".into(),
            release: String::new(),
            env: String::new(),
            device: "desktop".into(),
            browser: "Chrome".into(),
            os: "Linux".into(),
            country: String::new(),
            ect: String::new(),
            viewport_w: 0,
            viewport_h: 0,
            dpr: 0.0,
            memory: 0.0,
            cores: 0,
            skew_ms: 0,
            attribution: "{}".into(),
            tag_keys: vec![],
            tag_values: vec![],
            seq: 7,
            page_at: 0,
            report_n: 0,
        }
    }

    pub(crate) fn batch(values: &[f64]) -> Batch {
        Batch { metrics: values.iter().map(|&v| metric(v)).collect(), api_calls: Vec::<ApiCallRow>::new() }
    }

    /// ENOSPC for real: the spool on a 2 MiB tmpfs, the disk filled by a filler file. Appends
    /// are refused (`Storage`); once the filler is gone they succeed again without reopening the
    /// spool from outside (the committer reopens its database), and every record committed
    /// before is still there. Needs root to mount; elsewhere it says so and passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_work_again_once_a_full_disk_has_space() {
        struct Mounted(PathBuf);
        impl Drop for Mounted {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = temp_dir("enospc");
        std::fs::create_dir_all(&dir).expect("creates the mount point");
        let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&dir).status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot mount a tmpfs at {} (needs root)", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let mounted = Mounted(dir.clone());
        let spool = Spool::open(&dir, 1 << 30, 100).expect("opens");
        let mut stored = Vec::new();
        for i in 0..20 {
            let values = vec![f64::from(i); 10];
            spool.append(&batch(&values), 1_000).await.expect("appends while there is space");
            stored.extend(values);
        }
        // The rest of the disk taken by another file.
        let filler = dir.join("filler");
        {
            let mut file = std::fs::File::create(&filler).expect("creates the filler");
            let chunk = vec![0xA5u8; 16 << 10];
            while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
            let _ = file.sync_all();
        }
        let mut refused = None;
        for i in 0..500 {
            let values = vec![1_000.0 + f64::from(i); 200];
            match spool.append(&batch(&values), 1_000).await {
                Ok(()) => stored.extend(values),
                Err(SpoolError::Storage(why)) => {
                    refused = Some(why);
                    break;
                }
                Err(other) => panic!("refused with {other}, expected a storage error"),
            }
        }
        let why = refused.expect("a full disk refuses appends");
        assert!(spool.failure().is_some(), "the failure is shown: {why}");

        std::fs::remove_file(&filler).expect("removes the filler");
        let started = Instant::now();
        loop {
            match spool.append(&batch(&[7.0]), 1_000).await {
                Ok(()) => break,
                Err(SpoolError::Storage(why)) => {
                    assert!(started.elapsed() < Duration::from_secs(30), "still refused after 30 s: {why}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(other) => panic!("refused with {other}"),
            }
        }
        stored.push(7.0);
        assert_eq!(spool.failure(), None, "cleared by the commit that succeeded");
        let records = spool.read(None, u64::MAX, None).expect("reads");
        assert_eq!(values(&records), stored, "every record committed before the disk filled is kept");
        assert_eq!(spool.stats_fast().rows, stored.len() as u64, "the totals match the file");
        // Removal works again too.
        let last = records.last().map(|r| r.key).expect("records");
        spool.remove_through(last, Vec::new()).await.expect("removes");
        assert_eq!(spool.stats_fast().rows, 0);
        spool.close();
        // The database closes with the last handle; then the tmpfs can go.
        drop(spool);
        drop(mounted);
    }

    fn values(records: &[Record]) -> Vec<f64> {
        records.iter().flat_map(|r| r.batch.as_ref().expect("decodes").metrics.iter().map(|m| m.value)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_survive_reopening_until_removed() {
        let dir = temp_dir("reopen");
        let spool = Spool::open(&dir, 1 << 30, 100).expect("opens");
        let id = spool.id().to_owned();
        for i in 0..5 {
            spool.append(&batch(&[f64::from(i), f64::from(i) + 0.5]), 1_000 + i as u64).await.expect("appends");
        }
        let stats = spool.stats();
        assert_eq!((stats.records, stats.rows, stats.oldest_ms), (5, 10, Some(1_000)));
        spool.remove_through(1, vec![]).await.expect("removes");
        spool.close();
        drop(spool);

        let spool = Spool::open(&dir, 1 << 30, 100).expect("reopens");
        assert_eq!(spool.id(), id, "the id is kept");
        let stats = spool.stats();
        assert_eq!((stats.records, stats.rows, stats.oldest_ms), (3, 6, Some(1_002)), "totals are recovered");
        let records = spool.read(None, 1_000, None).expect("reads");
        assert_eq!(values(&records), vec![2.0, 2.5, 3.0, 3.5, 4.0, 4.5]);
        // Keys never repeat, even after the records before them were removed and the spool reopened.
        spool.append(&batch(&[9.0]), 2_000).await.expect("appends");
        let keys: Vec<u64> = spool.read(None, 1_000, None).expect("reads").iter().map(|r| r.key).collect();
        assert_eq!(keys, vec![2, 3, 4, 5]);
        // Reads stop at the row budget, but always return at least one record.
        assert_eq!(spool.read(None, 3, None).expect("reads").len(), 1);
        assert_eq!(spool.read(Some(2), 4, None).expect("reads").len(), 2);
        assert_eq!(spool.read(None, 1, Some(3)).expect("reads").len(), 2, "`until` reads a fixed range");
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_refuses_and_accepts_again_once_drained() {
        let dir = temp_dir("full");
        let one = encode(&batch(&[1.0]), 0).len() as u64;
        let spool = Spool::open(&dir, one * 3, 100).expect("opens");
        for _ in 0..3 {
            spool.append(&batch(&[1.0]), 0).await.expect("room");
        }
        assert!(matches!(spool.append(&batch(&[1.0]), 0).await, Err(SpoolError::Full { .. })));
        spool.remove_through(0, vec![]).await.expect("removes");
        spool.append(&batch(&[1.0]), 0).await.expect("room again");
        spool.close();
        assert!(matches!(spool.append(&batch(&[1.0]), 0).await, Err(SpoolError::Closed)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_commits() {
        let dir = temp_dir("group");
        let spool = Spool::open(&dir, 1 << 30, 10_000).expect("opens");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(&batch(&[f64::from(i)]), 0).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("joins").expect("appends");
        }
        let mut got = values(&spool.read(None, u64::MAX, None).expect("reads"));
        got.sort_by(f64::total_cmp);
        assert_eq!(got, (0..200).map(f64::from).collect::<Vec<_>>(), "every record, once");
        let commits = spool.commit_stats().commits.load(Ordering::Relaxed);
        assert!(commits < 200, "{commits} commits for 200 concurrent appends: no group commit");
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_records_are_reported_not_decoded() {
        let good = encode(&batch(&[1.0, 2.0]), 7);
        let r = decode(3, &good);
        assert_eq!((r.key, r.received_ms, r.rows), (3, 7, 2));
        assert!(r.batch.is_ok());
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(decode(3, &flipped).batch.expect_err("damaged"), "checksum mismatch");
        assert_eq!(decode(3, &flipped).rows, 2, "the header still says how many rows were lost");
        assert!(!decode(3, &flipped).foreign, "damage is not a foreign format");
        assert!(decode(3, &good[..10]).batch.is_err());
        let mut future = good;
        future[0] = 9;
        assert!(decode(3, &future).batch.expect_err("unknown format").contains("format 9"));
        assert!(decode(3, &future).foreign, "a newer format is kept, not dropped");
    }

    /// The record format is the rows' postcard encoding, which carries no field names: a change
    /// to `Batch`, `MetricRow` or `ApiCallRow` silently changes what old records mean. This
    /// golden encoding fails first; then bump `FORMAT` (old records are quarantined, not misread).
    /// Records spooled by a collector before `seq` (format 1) are read and get their arrival order
    /// from the record's receive time.
    #[test]
    fn format_1_records_are_still_read() {
        // A metric row without seq (7, one byte) and the page clock and report number (0, one
        // byte each) is format 1's.
        let payload = older_payload(&batch(&[2.5]), 3, 0);
        let mut record = vec![1u8];
        record.extend_from_slice(&1_000u64.to_le_bytes());
        record.extend_from_slice(&1u32.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let decoded = decode(5, &record).batch.expect("format 1 decodes");
        assert_eq!(decoded.metrics.len(), 1);
        assert_eq!((decoded.metrics[0].value, decoded.metrics[0].seq), (2.5, 1_000 << 10));
    }

    /// A crash between the two renames of a salvage by an older collector left no `spool.redb`,
    /// only the salvaged copy: the next start takes the copy, not a new empty spool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_salvage_is_finished_at_start() {
        let dir = temp_dir("salvage-interrupted");
        let spool = Spool::open(&dir, 1 << 30, 100).expect("opens");
        let id = spool.id().to_owned();
        for i in 0..3 {
            spool.append(&batch(&[f64::from(i)]), 1_000 + i as u64).await.expect("appends");
        }
        spool.close();
        drop(spool);
        let path = dir.join("spool.redb");
        std::fs::rename(&path, path.with_extension("redb.salvaging")).expect("the crash's state");

        let spool = Spool::open(&dir, 1 << 30, 100).expect("reopens");
        assert_eq!(spool.id(), id, "the salvaged spool, not a new one");
        assert_eq!(values(&spool.read(None, 1_000, None).expect("reads")), vec![0.0, 1.0, 2.0]);
        assert!(!path.with_extension("redb.salvaging").exists());
        spool.close();
        drop(spool);

        // A copy beside an existing spool is a salvage that did not finish building: left alone.
        std::fs::write(path.with_extension("redb.salvaging"), b"partial").expect("a partial copy");
        let spool = Spool::open(&dir, 1 << 30, 100).expect("reopens");
        assert_eq!(spool.stats().records, 3);
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A damaged spool file is salvaged in place: `spool.redb` holds the readable records and the
    /// damaged file stays for inspection under a second name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_file_is_replaced_by_its_salvaged_copy() {
        let dir = temp_dir("salvage-replace");
        let spool = Spool::open(&dir, 1 << 30, 100).expect("opens");
        for i in 0..3 {
            spool.append(&batch(&[f64::from(i)]), 1_000 + i as u64).await.expect("appends");
        }
        spool.close();
        drop(spool);
        let path = dir.join("spool.redb");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("spool file");
        std::io::Write::write_all(&mut f, &[0xa5; 3000]).expect("torn tail");
        drop(f);

        let spool = Spool::open(&dir, 1 << 30, 100).expect("salvages");
        let report = spool.salvage().expect("salvaged").clone();
        assert_eq!((report.records, report.cut_bytes), (3, 3000));
        assert!(report.moved_to.exists(), "the damaged file is kept");
        assert!(!path.with_extension("redb.salvaging").exists());
        assert_eq!(values(&spool.read(None, 1_000, None).expect("reads")), vec![0.0, 1.0, 2.0]);
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn api_call(seq: u64) -> ApiCallRow {
        ApiCallRow {
            site: "s".into(),
            event_time: 1,
            received_at: 2,
            route: "/r".into(),
            method: "GET".into(),
            status: 200,
            ok: 1,
            error: String::new(),
            duration: 3.0,
            server_timing: "[]".into(),
            session: "x".into(),
            page: "p".into(),
            url: "/".into(),
            nav: "navigate".into(),
            release: String::new(),
            env: String::new(),
            device: "desktop".into(),
            browser: "b".into(),
            os: "o".into(),
            country: String::new(),
            seq,
            call_id: String::new(),
        }
    }

    /// The unpacked rows of `b` as an older format stored them: each metric row without its last
    /// `metric_cut` bytes and each API call without its last `call_cut` (the fields added since,
    /// each one byte when 0 or empty).
    fn older_payload(b: &Batch, metric_cut: usize, call_cut: usize) -> Vec<u8> {
        fn rows<T: serde::Serialize>(out: &mut Vec<u8>, rows: &[T], cut: usize) {
            out.extend(postcard::to_stdvec(&rows.len()).expect("encodes"));
            for row in rows {
                let row = postcard::to_stdvec(row).expect("encodes");
                out.extend_from_slice(&row[..row.len() - cut]);
            }
        }
        let mut out = Vec::new();
        rows(&mut out, &b.metrics, metric_cut);
        rows(&mut out, &b.api_calls, call_cut);
        out
    }

    /// Records spooled by a collector before API calls had `seq` (format 2) are read, and each
    /// call gets an arrival order from the record (the same at every read).
    #[test]
    fn format_2_records_are_still_read() {
        // API calls of seq 0 and no call_id (one byte each) without those bytes, and metric rows
        // without the page clock and report number, are format 2's.
        let mut b = batch(&[2.5]);
        b.api_calls.push(api_call(0));
        b.api_calls.push(api_call(0));
        let payload = older_payload(&b, 2, 2);
        let mut record = vec![2u8];
        record.extend_from_slice(&1_000u64.to_le_bytes());
        record.extend_from_slice(&3u32.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let decoded = decode(5, &record).batch.expect("format 2 decodes");
        assert_eq!(decoded.metrics, b.metrics, "metrics as they were");
        let seqs: Vec<u64> = decoded.api_calls.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![1_000 << 10, (1_000 << 10) | 1]);
        assert_eq!(decoded.api_calls[1], ApiCallRow { seq: (1_000 << 10) | 1, ..api_call(0) });
    }

    #[test]
    fn the_record_format_changes_only_with_its_number() {
        let mut b = batch(&[1.5]);
        b.api_calls.push(api_call(9));
        b.metrics[0].page_at = 1_800_000_000_123;
        b.metrics[0].report_n = 2;
        let payload = postcard::to_stdvec(&packed::pack(&b)).expect("encodes");
        let payload = postcard::to_extend(&packed::orders(&b), payload).expect("encodes");
        let hex: String = payload.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(
            (FORMAT, crc32fast::hash(&payload), payload.len()),
            (5, GOLDEN_CRC, GOLDEN_LEN),
            "the rows' encoding changed: bump FORMAT and update the golden values (encoding: {hex})"
        );
    }

    const GOLDEN_CRC: u32 = 1_778_060_446;
    const GOLDEN_LEN: usize = 184;

    #[test]
    fn format_3_records_are_still_read() {
        // The rows, not packed, without the metrics' page clock and report number and the API
        // calls' call_id, are format 3's.
        let mut b = batch(&[1.5, 2.5]);
        b.api_calls.push(api_call(9));
        let payload = older_payload(&b, 2, 1);
        let mut value = vec![3u8];
        value.extend_from_slice(&42u64.to_le_bytes());
        value.extend_from_slice(&3u32.to_le_bytes());
        value.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        value.extend_from_slice(&payload);
        let record = decode(7, &value);
        assert_eq!(record.batch.expect("format 3 reads"), b);
        assert_eq!((record.received_ms, record.rows, header_site(&value)), (42, 3, None));
    }

    /// Records of format 4 (packed rows, before the page clock) are read, their metrics without
    /// a page clock or report number; today's keep both.
    #[test]
    fn format_4_records_are_still_read() {
        let mut b = batch(&[1.5, 2.5]);
        b.api_calls.push(api_call(9));
        let today = encode(&b, 42);
        // Format 4 is today's record without the orders after the packed rows.
        let site_len = usize::from(today[HEADER_BYTES]);
        let mut payload = today[HEADER_BYTES..HEADER_BYTES + 1 + site_len].to_vec();
        payload.extend(postcard::to_stdvec(&packed::pack(&b)).expect("encodes"));
        let mut value = vec![4u8];
        value.extend_from_slice(&42u64.to_le_bytes());
        value.extend_from_slice(&3u32.to_le_bytes());
        value.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        value.extend_from_slice(&payload);
        let record = decode(7, &value);
        assert_eq!(header_site(&value), Some("demo"));
        assert_eq!(record.batch.expect("format 4 reads"), b);

        b.metrics[1].page_at = 1_800_000_000_123;
        b.metrics[1].report_n = 3;
        assert_eq!(decode(7, &encode(&b, 42)).batch.expect("format 5 reads"), b, "today's keep the page clock");
    }

    /// A beacon as a hostile client can legally make it: 500 metrics, long envelope strings.
    fn wide_beacon(site: &str) -> Batch {
        let long = |c: char| c.to_string().repeat(200);
        let rows = (0..500).map(|i| MetricRow {
            site: site.into(),
            url: format!("/{}", long('u')),
            release: long('r'),
            env: long('e'),
            session: long('s'),
            page: long('p'),
            name: format!("custom.metric_{}", i % 7),
            metric_id: String::new(),
            seq: (1_800_000_000_000u64 << 10) | i,
            ..metric(i as f64)
        });
        let mut b = Batch { metrics: rows.collect(), api_calls: vec![] };
        b.api_calls.push(ApiCallRow { site: site.into(), session: long('s'), page: long('p'), ..api_call(3) });
        b
    }

    #[test]
    fn a_beacon_s_envelope_is_stored_once_and_read_back_exactly() {
        let b = wide_beacon("shop");
        let record = encode(&b, 5);
        let per_row = HEADER_BYTES + postcard::to_stdvec(&b).expect("encodes").len();
        assert!(record.len() * 10 < per_row, "format 4 is {} bytes, the envelope per row {per_row}", record.len());
        assert_eq!(header_site(&record), Some("shop"));
        let read = decode(1, &record);
        assert_eq!(read.batch.expect("decodes"), b);
        assert_eq!(read.rows, 501);
        // Rows of two page views in one record keep their own envelopes.
        let mut two = batch(&[1.0, 2.0]);
        two.metrics[1].page = "another".into();
        two.api_calls.push(ApiCallRow { page: "another".into(), ..api_call(1) });
        assert_eq!(decode(2, &encode(&two, 5)).batch.expect("decodes"), two);
    }

    fn site_batch(site: &str) -> Batch {
        Batch { metrics: vec![MetricRow { site: site.into(), ..metric(1.0) }], api_calls: vec![] }
    }

    #[tokio::test]
    async fn a_flooding_site_cannot_take_the_other_sites_reserves() {
        let dir = temp_dir("shares");
        let one = encode(&site_batch("a"), 0).len() as u64;
        // Room for 12 records, three sites: a reserve of 2 each, the other 6 first come.
        let spool = Spool::open(&dir, one * 12, 100).expect("opens");
        spool.share_among(vec!["a".into(), "b".into(), "c".into()]);
        let mut a = 0;
        while spool.append(&site_batch("a"), 0).await.is_ok() {
            a += 1;
        }
        assert_eq!(a, 8, "a takes its reserve and the shared part, not b's or c's reserve");
        assert!(matches!(spool.append(&site_batch("a"), 0).await, Err(SpoolError::ShareFull { .. })));
        for _ in 0..2 {
            spool.append(&site_batch("b"), 0).await.expect("b's reserve is there");
            spool.append(&site_batch("c"), 0).await.expect("c's reserve is there");
        }
        assert!(matches!(spool.append(&site_batch("c"), 0).await, Err(SpoolError::Full { .. })));
        assert_eq!(spool.site_bytes(), vec![("a".into(), one * 8), ("b".into(), one * 2), ("c".into(), one * 2)]);
        // Shipping frees a's records (the first eight) and the space with them.
        spool.remove_through(7, vec![]).await.expect("removes");
        assert_eq!(spool.site_bytes()[0], ("a".into(), 0));
        spool.append(&site_batch("a"), 0).await.expect("a has room again");
        spool.close();
        drop(spool);
        let reopened = Spool::open(&dir, one * 12, 100).expect("reopens");
        assert_eq!(reopened.site_bytes(), vec![("a".into(), one), ("b".into(), one * 2), ("c".into(), one * 2)], "counted again at start");
        reopened.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn one_site_alone_may_use_the_whole_spool() {
        let dir = temp_dir("alone");
        let one = encode(&site_batch("a"), 0).len() as u64;
        let spool = Spool::open(&dir, one * 12, 100).expect("opens");
        spool.share_among(vec!["a".into(), "b".into()]);
        spool.append(&site_batch("b"), 0).await.expect("b");
        let mut a = 0;
        while spool.append(&site_batch("a"), 0).await.is_ok() {
            a += 1;
        }
        assert_eq!(a, 9, "a stops where b's unused reserve (3 - 1) begins");
        for _ in 0..2 {
            spool.append(&site_batch("b"), 0).await.expect("b's reserve is still there");
        }
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
        let dir = temp_dir("single");
        let spool = Spool::open(&dir, one * 12, 100).expect("opens");
        spool.share_among(vec!["a".into()]);
        let mut a = 0;
        while spool.append(&site_batch("a"), 0).await.is_ok() {
            a += 1;
        }
        assert_eq!(a, 12, "one site: no reserves");
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Dead letters: rows ClickHouse refuses for good, kept where a person can read and re-insert them
//! so that they stop blocking the rows behind them.
//!
//! # When a row is refused for good
//! Only when ClickHouse itself answered with an exception about the data ([`classify`]): a value
//! it cannot parse or convert, a constraint or `throwIf` it violates ([`Refusal::Rows`]), or a
//! table whose columns do not match ours ([`Refusal::Table`]), or when the client cannot encode
//! the rows at all. No connection, a timeout, an answer without a ClickHouse exception (a proxy's
//! 502) or an exception that is not about the data (memory, too many parts, read-only replica,
//! unknown table or database: operations, not data) is an outage: retried for as long as it
//! lasts, never dead-lettered. ClickHouse 18.16 answers every exception with HTTP 500, so the
//! exception code in the body is what tells them apart, not the status.
//!
//! # Where a dead row goes
//! One row per refused row in the `dead_letter` table (migration 12): when, the spool record it
//! came from, the target table, the error and the row as a JSON object whose keys are the target
//! table's columns (`INSERT INTO metrics FORMAT JSONEachRow` takes it back). When ClickHouse
//! refuses that insert too, the same rows go to `<spool_dir>/dead-letter/<day>.jsonl`, appended
//! and synced. Either way they leave the spool only after they are kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use clickhouse::error::Error;
use clickhouse::Row;
use serde::Serialize;

/// The table dead rows go to.
pub const TABLE: &str = "dead_letter";

/// Longest error text kept per row (ClickHouse may append a stack trace).
const MAX_ERROR_CHARS: usize = 2_000;

/// What an insert's error says about the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// ClickHouse is unreachable, slow or answered without an exception: retry.
    Outage,
    /// ClickHouse answered with an exception that is not about the data: retry.
    Other,
    /// Some rows are refused (a value): the others of the insert may be fine.
    Rows,
    /// Every row is refused (the table does not take rows of this shape).
    Table,
}

impl Refusal {
    /// The data itself is refused (counts towards `dead_letter_after_attempts`).
    pub fn is_for_good(self) -> bool {
        matches!(self, Refusal::Rows | Refusal::Table)
    }
}

/// ClickHouse exception codes that refuse values (`ErrorCodes.cpp`): cannot parse text, quoted
/// string, input assertion, date, date-time, number; argument out of bound; cannot convert type;
/// incorrect data; sizes of arrays differ; `throwIf`; a violated constraint.
const VALUE_CODES: [u32; 12] = [6, 26, 27, 38, 41, 69, 70, 72, 117, 190, 395, 469];

/// Codes that refuse the table's shape: no such column (8, 10, 16), cannot read all data (33:
/// RowBinary rows of another shape), unknown identifier (47), type mismatch (53).
const TABLE_CODES: [u32; 6] = [8, 10, 16, 33, 47, 53];

/// Classifies an insert error.
pub fn classify(err: &Error) -> Refusal {
    match err {
        Error::BadResponse(text) => match exception_code(text) {
            Some(code) if VALUE_CODES.contains(&code) => Refusal::Rows,
            Some(code) if TABLE_CODES.contains(&code) => Refusal::Table,
            Some(_) => Refusal::Other,
            None => Refusal::Outage,
        },
        // The client could not encode a row (serde): that row never will be.
        Error::Custom(_) | Error::SequenceMustHaveLength => Refusal::Rows,
        Error::SchemaMismatch(_) => Refusal::Table,
        _ => Refusal::Outage,
    }
}

/// The code of a ClickHouse exception text: `Code: 395, e.displayText() = …` (18.16) or
/// `Code: 395. DB::Exception: …` (later). `None` for anything else (a proxy's error page).
pub fn exception_code(text: &str) -> Option<u32> {
    let rest = text.trim_start().strip_prefix("Code: ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    if !text.contains("Exception") {
        return None;
    }
    rest[..digits].parse().ok()
}

/// One dead row (`dead_letter` table, and one line of a dead-letter file).
#[derive(Debug, Clone, PartialEq, Row, Serialize, serde::Deserialize)]
pub struct DeadRow {
    /// When the row was given up on, epoch seconds.
    pub dead_at: u32,
    /// When the collector received it, epoch ms.
    pub received_ms: u64,
    /// The key of its spool record.
    pub spool_key: u64,
    /// The table that refused it.
    pub target: String,
    /// ClickHouse's answer.
    pub error: String,
    /// The row as a JSON object, keys the target table's columns.
    pub row: String,
}

impl DeadRow {
    pub fn new(target: &str, row: &impl Serialize, (spool_key, received_ms): (u64, u64), error: &str, now_s: u32) -> DeadRow {
        DeadRow {
            dead_at: now_s,
            received_ms,
            spool_key,
            target: target.to_owned(),
            error: error.chars().take(MAX_ERROR_CHARS).collect(),
            // Serializing a row of plain fields into JSON cannot fail; if it ever did, the debug
            // text of the error is kept instead of losing the row silently.
            row: serde_json::to_string(row).unwrap_or_else(|e| format!("{{\"unserializable\":{:?}}}", e.to_string())),
        }
    }
}

/// Appends `rows` as JSON lines to today's file in `dir` and syncs it. Returns the file.
pub fn append_to_file(dir: &Path, rows: &[DeadRow]) -> std::io::Result<PathBuf> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir)?;
    let today = time::OffsetDateTime::now_utc().date();
    let path = dir.join(format!("{}-{:02}-{:02}.jsonl", today.year(), u8::from(today.month()), today.day()));
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    // A new file (or directory) is durable once its directory entry is.
    std::fs::File::open(dir)?.sync_all()?;
    if created {
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_about_the_data_are_refusals() {
        let bad = |text: &str| classify(&Error::BadResponse(text.to_owned()));
        // 18.16 and modern exception texts about values and shapes.
        assert_eq!(
            bad("Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception"),
            Refusal::Rows
        );
        assert_eq!(bad("Code: 27. DB::Exception: Cannot parse input: expected '\\t' (version 24.3.1)"), Refusal::Rows);
        assert_eq!(
            bad("Code: 16, e.displayText() = DB::Exception: No such column poison in table t, e.what() = DB::Exception"),
            Refusal::Table
        );
        assert_eq!(bad("Code: 53. DB::Exception: Type mismatch"), Refusal::Table);
        // Exceptions about the server, not the data: retried for ever.
        for code in [241, 252, 242, 202, 159, 209, 210, 60, 81, 516, 497, 999, 225] {
            assert_eq!(bad(&format!("Code: {code}. DB::Exception: whatever")), Refusal::Other, "code {code}");
        }
        // Answers that are not ClickHouse exceptions: a proxy, an empty 5xx.
        assert_eq!(bad("502 Bad Gateway"), Refusal::Outage);
        assert_eq!(bad("<html>Code: 395 is not ours</html>"), Refusal::Outage);
        assert_eq!(bad(""), Refusal::Outage);
        // No answer at all.
        assert_eq!(classify(&Error::TimedOut), Refusal::Outage);
        assert_eq!(classify(&Error::Network("connection refused".into())), Refusal::Outage);
        assert_eq!(classify(&Error::Other("connection reset".into())), Refusal::Outage);
        assert!(!Refusal::Outage.is_for_good() && !Refusal::Other.is_for_good());
        assert!(Refusal::Rows.is_for_good() && Refusal::Table.is_for_good());
    }

    #[test]
    fn dead_rows_are_appended_as_json_lines() {
        let dir = crate::spool::tests::temp_dir("dead-letter-file").join("dead-letter");
        let row = DeadRow::new("metrics", &serde_json::json!({"value": 666.0}), (7, 1_000), "Code: 395", 5);
        append_to_file(&dir, std::slice::from_ref(&row)).expect("appends");
        let path = append_to_file(&dir, std::slice::from_ref(&row)).expect("appends again");
        let text = std::fs::read_to_string(&path).expect("reads");
        let lines: Vec<DeadRow> = text.lines().map(|l| serde_json::from_str(l).expect("a dead row")).collect();
        assert_eq!(lines, vec![row.clone(), row]);
        assert_eq!(lines[0].row, r#"{"value":666.0}"#);
        let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
    }
}

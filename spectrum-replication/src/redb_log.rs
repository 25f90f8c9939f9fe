//! [`RedbStore`](crate::RedbStore)'s durable change log: one row per feed entry,
//! written in the transaction that makes the change, compacted in the same
//! transaction (see [`changelog`](crate::changelog)).
//!
//! Rows are keyed by feed index; each value is a protobuf `Entry` (below): the
//! time the change was committed, its key, the record stored (the replication
//! protocol's `Record`, as in the `records` table) or none for a dropped one,
//! and whether a dropped record was a tombstone. The oldest position available
//! is the first row's index less one, or the feed head when the table is empty.

use ::redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use prost::Message;

use crate::changelog::{ChangeLogLimits, MAX_COMPACTED_PER_COMMIT, check_from, page};
use crate::error::StoreError;
use crate::proto;
use crate::record::{Change, ChangeBatch, Record};

/// A row or value that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Corrupt(String);

pub(crate) fn storage<E>(subject: impl Into<String>, verb: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let subject = subject.into();
    move |e| StoreError::Storage { subject, verb, source: Box::new(e) }
}

pub(crate) fn corrupt(subject: impl Into<String>, why: impl Into<String>) -> StoreError {
    StoreError::Storage { subject: subject.into(), verb: "decode", source: Box::new(Corrupt(why.into())) }
}

/// feed index → protobuf `Entry`.
pub(crate) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("change_log");

/// One row of the log.
#[derive(Clone, PartialEq, Message)]
struct Entry {
    /// When the change was committed, in ms since the Unix epoch (the store's clock).
    #[prost(uint64, tag = "1")]
    at_ms: u64,
    #[prost(string, tag = "2")]
    key: String,
    /// The record stored; absent for a dropped record.
    #[prost(message, optional, tag = "3")]
    record: Option<proto::Record>,
    #[prost(bool, tag = "4")]
    dropped_tombstone: bool,
}

/// An [`Entry`] as written: its record already encoded (the bytes stored in
/// the `records` table), so a commit encodes each record once. A
/// length-delimited field has the same wire form whether it holds a message
/// or that message's bytes, so a row written as this decodes as an `Entry`.
#[derive(Clone, PartialEq, Message)]
struct EntryRow {
    #[prost(uint64, tag = "1")]
    at_ms: u64,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "vec", optional, tag = "3")]
    record: Option<Vec<u8>>,
    #[prost(bool, tag = "4")]
    dropped_tombstone: bool,
}

/// The first fields of an [`Entry`] alone: a row's time and key read without
/// decoding (and checking) its record, for compaction and for pages of a
/// prefix that the row is not under.
#[derive(Clone, PartialEq, Message)]
struct EntryHead {
    #[prost(uint64, tag = "1")]
    at_ms: u64,
    #[prost(string, tag = "2")]
    key: String,
}

/// Appends the changes of one commit made at `now_ms`, each with its record
/// as encoded for the `records` table (`None` for a dropped record), then
/// drops what `limits` no longer keep (at most [`MAX_COMPACTED_PER_COMMIT`]
/// rows), in `tx`. Returns the oldest position the log then resumes from, its
/// last change being `head`.
pub(crate) fn append<'a>(
    tx: &WriteTransaction,
    shown: &str,
    feed: impl IntoIterator<Item = (&'a Change, Option<Vec<u8>>)>,
    head: u64,
    now_ms: u64,
    limits: &ChangeLogLimits,
) -> Result<u64, StoreError> {
    let subject = format!("{shown}: table change_log");
    let mut table = tx.open_table(CHANGES).map_err(storage(&subject, "open"))?;
    for (c, record) in feed {
        let row =
            EntryRow { at_ms: now_ms, key: c.key.clone(), record, dropped_tombstone: c.dropped_tombstone };
        table.insert(c.index, row.encode_to_vec().as_slice()).map_err(storage(&subject, "write"))?;
    }
    let keep_from = limits.first_kept(head);
    let cut = limits.cut_ms(now_ms);
    for _ in 0..MAX_COMPACTED_PER_COMMIT {
        let old = match table.first().map_err(storage(&subject, "read"))? {
            None => false,
            Some((k, v)) => k.value() < keep_from || decode_head(&subject, k.value(), v.value())?.at_ms < cut,
        };
        if !old {
            break;
        }
        table.pop_first().map_err(storage(&subject, "remove"))?;
    }
    oldest(&table, &subject, head)
}

fn decode_head(subject: &str, index: u64, bytes: &[u8]) -> Result<EntryHead, StoreError> {
    EntryHead::decode(bytes).map_err(storage(format!("{subject}, index {index}"), "decode"))
}

fn decode(subject: &str, index: u64, bytes: &[u8]) -> Result<(u64, Change), StoreError> {
    let at = format!("{subject}, index {index}");
    let entry = Entry::decode(bytes).map_err(storage(&at, "decode"))?;
    let record = entry.record.map(Record::try_from).transpose().map_err(storage(&at, "decode"))?;
    if record.as_ref().is_some_and(|r| r.key != entry.key) {
        return Err(corrupt(at, "the entry's record is of another key"));
    }
    let change = Change { index, key: entry.key, record, dropped_tombstone: entry.dropped_tombstone };
    Ok((entry.at_ms, change))
}

/// The oldest position the log in `tx`'s view resumes from, when its last change is `head`.
fn oldest(
    table: &impl ReadableTable<u64, &'static [u8]>,
    subject: &str,
    head: u64,
) -> Result<u64, StoreError> {
    Ok(table.first().map_err(storage(subject, "read"))?.map_or(head, |(k, _)| k.value().saturating_sub(1)))
}

/// The oldest position the log resumes from, when the store's last change is `head`.
pub(crate) fn oldest_in(db: &Database, shown: &str, head: u64) -> Result<u64, StoreError> {
    use ::redb::ReadableDatabase;
    let subject = format!("{shown}: table change_log");
    let tx = db.begin_read().map_err(storage(shown, "begin a read of"))?;
    let table = tx.open_table(CHANGES).map_err(storage(&subject, "open"))?;
    oldest(&table, &subject, head)
}

/// The page of changes after `from` (see [`changelog::page`](crate::changelog)):
/// the rows of the log in `tx` up to `head` (a commit since may have added
/// more), then `tail`, the changes after `head` not on the file yet (ending
/// at `tail_head`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn changes_since(
    tx: &::redb::ReadTransaction,
    shown: &str,
    head: u64,
    tail: Vec<Change>,
    tail_head: u64,
    prefix: &str,
    from: u64,
    limit: usize,
) -> Result<ChangeBatch, StoreError> {
    let subject = format!("{shown}: table change_log");
    let table = tx.open_table(CHANGES).map_err(storage(&subject, "open"))?;
    check_from(from, tail_head.max(head), oldest(&table, &subject, head)?)?;
    let rows = table.range(from.saturating_add(1)..=head).map_err(storage(&subject, "read"))?;
    let rows = rows.map(|row| {
        let (k, v) = row.map_err(storage(&subject, "read"))?;
        // A row of another prefix is only counted: its record is not decoded.
        let head = decode_head(&subject, k.value(), v.value())?;
        if !head.key.starts_with(prefix) {
            return Ok(Change { index: k.value(), key: head.key, record: None, dropped_tombstone: false });
        }
        Ok(decode(&subject, k.value(), v.value())?.1)
    });
    let tail = tail.into_iter().filter(|c| c.index > from).map(Ok);
    let mut expected = from.saturating_add(1);
    let changes = rows.chain(tail).map(|c| {
        let c = c?;
        if c.index != expected {
            return Err(corrupt(format!("{subject}, index {expected}"), "missing: the log has a gap"));
        }
        expected += 1;
        Ok(c)
    });
    page(changes, prefix, limit, tail_head.max(head))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spectrum_core::Timestamp;

    use super::*;
    use crate::record::{Lineage, VersionToken};

    fn change(record: Option<Record>, dropped_tombstone: bool) -> Change {
        Change { index: 7, key: "settings/mode".into(), record, dropped_tombstone }
    }

    /// A row written with its record's stored bytes is, byte for byte, the
    /// `Entry` that encodes the record itself, and decodes back to the change.
    #[test]
    fn a_row_written_from_stored_bytes_is_the_entry_and_decodes_to_the_change() {
        let origin = "n1".parse().expect("origin");
        let mut lineage = Lineage {
            replaces: Some(VersionToken { origin: "n2".parse().expect("origin"), seq: 9 }),
            ..Default::default()
        };
        lineage.context.raise(&origin, 3);
        let record = Record {
            key: "settings/mode".into(),
            value: Some(Bytes::from_static(b"fast")),
            stamp: Timestamp::new(1_700_000_000_000, 2),
            origin,
            seq: 4,
            lineage,
        };
        for c in [change(Some(record.clone()), false), change(None, true), change(None, false)] {
            let stored = c.record.as_ref().map(|r| proto::Record::from(r).encode_to_vec());
            let row = EntryRow {
                at_ms: 42,
                key: c.key.clone(),
                record: stored,
                dropped_tombstone: c.dropped_tombstone,
            };
            let entry = Entry {
                at_ms: 42,
                key: c.key.clone(),
                record: c.record.as_ref().map(proto::Record::from),
                dropped_tombstone: c.dropped_tombstone,
            };
            let bytes = row.encode_to_vec();
            assert_eq!(bytes, entry.encode_to_vec(), "same wire form as the Entry");
            let (at_ms, back) = decode("change_log", c.index, &bytes).expect("decodes");
            assert_eq!((at_ms, back), (42, c));
        }
    }
}

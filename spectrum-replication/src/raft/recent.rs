//! Proposals decided lately, by id: a write reaches the log once per attempt,
//! and is decided once.
//!
//! A node that forwards a write to the leader cannot always tell whether the
//! leader took it: the connection can break after the call was sent, or the
//! leader's Raft can stop after appending it, and the next leader may commit
//! that entry. Proposing it again could apply it twice (a second version of a
//! put; a compare-and-set applied, then answered "condition failed"). So every
//! proposal carries an id drawn once per write ([`ProposalId`]), and the state
//! machine keeps the answers of the proposals it decided lately: a proposal
//! whose id it has seen is not decided again, and gets the first decision's
//! answer. This is the Raft thesis's remedy (Ongaro, 2014, §6.3,
//! "Implementing linearizable semantics"), with one id per write in place of
//! a session per client.
//!
//! The table is part of the replicated state, so every replica must hold the
//! same one at the same log position: it changes only as entries are applied,
//! ids expire by the log's own clock (the applied proposals' stamps, never the
//! node's) and by count, it travels in snapshots, and on disk it is saved in
//! the same transaction as the applied position (so after a crash it is the
//! table of that position, and replaying the log after it rebuilds the rest:
//! the same ids, though an entry the store already held before the crash is
//! answered [`Applied::Unknown`], see `state_machine`).
//!
//! A retry can come after its id expired. So the table also keeps its
//! *horizon*: the newest stamp of any id it dropped. A proposal it does not
//! know, stamped at or before the horizon, may be a retry of one it forgot,
//! and is not decided: it is answered [`Applied::Unknown`], on every replica
//! alike. A fresh proposal is stamped after the horizon unless it waited
//! longer than the table keeps ids.

use std::collections::{HashMap, VecDeque};

use prost::Message;

use super::codec::{Applied, ProposalId, from_json, to_json};
use crate::proto;
use crate::wire::InvalidMessage;

/// Most ids kept; the oldest go first.
pub(crate) const KEEP_MAX: usize = 65_536;
/// Ids are kept while their stamp is at most this far behind the newest
/// applied stamp (ms): far longer than a write's deadline, within which its
/// retries are made.
pub(crate) const KEEP_FOR_MS: u64 = 60_000;

/// What was decided for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The log index of the entry that carried the first proposal.
    pub(crate) index: u64,
    /// Its answer.
    pub(crate) applied: Applied,
    /// The wall time of its stamp (ms since the Unix epoch).
    pub(crate) wall_ms: u64,
}

/// Changes to the saved table: rows to insert, and the number below which
/// rows are dropped (`clear` drops every row first, as a snapshot install
/// does), and the horizon to save.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) clear: bool,
    pub(crate) drop_below: u64,
    pub(crate) insert: Vec<(u64, Vec<u8>)>,
    pub(crate) horizon_ms: u64,
    /// Every row numbered below this is in the table once these are committed.
    through: u64,
}

impl Rows {
    /// What committing these rows saves, for [`Recent::saved`].
    pub(crate) fn mark(&self) -> Mark {
        Mark { through: self.through, cleared: self.clear }
    }
}

/// Which rows a committed [`Rows`] brought to disk: those numbered below
/// `through`, and, when `cleared`, the replaced table's rows dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    through: u64,
    cleared: bool,
}

/// The table as the Raft file holds it: its rows (protobuf `RaftDecided`)
/// by running number, and its horizon.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    pub(crate) rows: Vec<(u64, Vec<u8>)>,
    pub(crate) horizon_ms: u64,
}

/// The proposals decided lately (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent {
    by_id: HashMap<ProposalId, Seen>,
    /// Running number and id, oldest first.
    order: VecDeque<(u64, ProposalId)>,
    /// The number the next id gets.
    next: u64,
    /// Rows numbered below this are saved.
    saved: u64,
    /// Every saved row must go (after a snapshot install).
    replaced: bool,
    /// The newest stamp (wall ms) of any id dropped.
    horizon_ms: u64,
}

impl Recent {
    /// How many ids are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Drops the ids that expired by the time a proposal stamped `wall_ms`
    /// is decided: beyond [`KEEP_MAX`], or more than [`KEEP_FOR_MS`] older.
    pub(crate) fn expire(&mut self, wall_ms: u64) {
        while let Some((_, id)) = self.order.front() {
            let old = self.by_id.get(id).is_none_or(|s| s.wall_ms.saturating_add(KEEP_FOR_MS) < wall_ms);
            if self.order.len() < KEEP_MAX && !old {
                break;
            }
            let (_, id) = self.order.pop_front().expect("front exists");
            if let Some(seen) = self.by_id.remove(&id) {
                self.horizon_ms = self.horizon_ms.max(seen.wall_ms);
            }
        }
    }

    /// Whether a proposal stamped `wall_ms` that the table does not know may
    /// be a retry of one it forgot (stamped at or before the newest id it
    /// dropped).
    pub(crate) fn may_have_forgotten(&self, wall_ms: u64) -> bool {
        wall_ms <= self.horizon_ms
    }

    /// What was decided for `id`, if it is kept.
    pub(crate) fn get(&self, id: &ProposalId) -> Option<&Seen> {
        self.by_id.get(id)
    }

    /// Notes the first decision for `id`.
    pub(crate) fn note(&mut self, id: ProposalId, seen: Seen) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_id.entry(id) {
            slot.insert(seen);
            self.order.push_back((self.next, id));
            self.next += 1;
        }
    }

    fn row(id: ProposalId, seen: &Seen) -> proto::RaftDecided {
        proto::RaftDecided {
            id: id.to_bytes(),
            index: seen.index,
            applied_json: to_json(&seen.applied),
            wall_ms: seen.wall_ms,
        }
    }

    fn from_row(i: usize, row: proto::RaftDecided) -> Result<(ProposalId, Seen), InvalidMessage> {
        let field = format!("decided[{i}].id");
        let id =
            ProposalId::from_bytes(&field, &row.id)?.ok_or_else(|| InvalidMessage::new(field, "empty"))?;
        let applied = from_json(&format!("decided[{i}].applied_json"), &row.applied_json)?;
        Ok((id, Seen { index: row.index, applied, wall_ms: row.wall_ms }))
    }

    /// The table as a snapshot carries it: its rows oldest first, and its
    /// horizon.
    pub(crate) fn to_proto(&self) -> (Vec<proto::RaftDecided>, u64) {
        let rows =
            self.order.iter().filter_map(|(_, id)| self.by_id.get(id).map(|s| Self::row(*id, s))).collect();
        (rows, self.horizon_ms)
    }

    /// The table a snapshot carries (its rows oldest first, and its horizon);
    /// it replaces every saved row at the next save.
    pub(crate) fn from_proto(rows: Vec<proto::RaftDecided>, horizon_ms: u64) -> Result<Self, InvalidMessage> {
        let mut recent = Self { horizon_ms, ..Self::default() };
        for (i, row) in rows.into_iter().enumerate() {
            let (id, seen) = Self::from_row(i, row)?;
            recent.note(id, seen);
        }
        recent.replaced = true;
        Ok(recent)
    }

    /// The table as saved.
    pub(crate) fn from_saved(saved: Saved) -> Result<Self, InvalidMessage> {
        let Saved { rows, horizon_ms } = saved;
        let mut recent = Self { horizon_ms, ..Self::default() };
        for (i, (number, bytes)) in rows.into_iter().enumerate() {
            let row = proto::RaftDecided::decode(bytes.as_slice())
                .map_err(|e| InvalidMessage::new(format!("decided[{i}]"), e.to_string()))?;
            let (id, seen) = Self::from_row(i, row)?;
            if recent.by_id.insert(id, seen).is_none() {
                recent.order.push_back((number, id));
            }
            recent.next = number + 1;
        }
        recent.saved = recent.next;
        Ok(recent)
    }

    /// What to write so the saved table matches this one; once that is
    /// committed, [`saved`](Self::saved) says so.
    pub(crate) fn rows(&self) -> Rows {
        let insert = self
            .order
            .iter()
            .filter(|(n, _)| self.replaced || *n >= self.saved)
            .filter_map(|(n, id)| self.by_id.get(id).map(|s| (*n, Self::row(*id, s).encode_to_vec())))
            .collect();
        Rows {
            clear: self.replaced,
            drop_below: self.order.front().map_or(self.next, |(n, _)| *n),
            insert,
            horizon_ms: self.horizon_ms,
            through: self.next,
        }
    }

    /// Notes that [`rows`](Self::rows) whose [`mark`](Rows::mark) is `mark`
    /// are committed. Ids noted since those rows were taken stay unsaved, so
    /// a save may run while decisions go on (one at a time: the next save's
    /// rows are taken after this one is noted). If a commit failed, the next
    /// one writes its rows again. A table replaced by a snapshot
    /// ([`from_proto`](Self::from_proto)) must not have a save of the table
    /// it replaced noted on it.
    pub(crate) fn saved(&mut self, mark: Mark) {
        self.saved = self.saved.max(mark.through);
        if mark.cleared {
            self.replaced = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(index: u64, wall_ms: u64) -> Seen {
        Seen { index, applied: Applied::Written { first: index * 10 }, wall_ms }
    }

    #[test]
    fn ids_expire_by_the_log_s_clock_and_by_count() {
        let mut recent = Recent::default();
        recent.note(ProposalId(1), seen(1, 1_000));
        recent.note(ProposalId(2), seen(2, 30_000));
        recent.expire(61_000);
        assert!(recent.get(&ProposalId(1)).is_some(), "exactly a minute behind is kept");
        assert!(!recent.may_have_forgotten(1_000));
        recent.expire(61_001);
        assert!(recent.get(&ProposalId(1)).is_none());
        assert!(recent.may_have_forgotten(1_000) && !recent.may_have_forgotten(1_001));
        assert_eq!(recent.get(&ProposalId(2)), Some(&seen(2, 30_000)));
        for i in 0..KEEP_MAX as u128 {
            recent.note(ProposalId(100 + i), seen(3, 30_000));
        }
        recent.expire(30_000);
        assert_eq!(recent.len(), KEEP_MAX - 1, "room for the id about to be noted");
        assert!(recent.get(&ProposalId(2)).is_none() && recent.get(&ProposalId(100)).is_none());
    }

    #[test]
    fn a_second_note_keeps_the_first_decision() {
        let mut recent = Recent::default();
        recent.note(ProposalId(7), seen(4, 1));
        recent.note(ProposalId(7), seen(9, 2));
        assert_eq!((recent.len(), recent.get(&ProposalId(7))), (1, Some(&seen(4, 1))));
    }

    #[test]
    fn saved_rows_and_snapshots_give_back_the_same_table() {
        let mut recent = Recent::default();
        for i in 0..5 {
            recent.note(ProposalId(i), seen(i as u64, 1_000));
        }
        let first = recent.rows();
        assert_eq!((first.clear, first.drop_below, first.insert.len()), (false, 0, 5));
        recent.saved(first.mark());
        recent.note(ProposalId(5), seen(5, 200_000));
        recent.expire(200_000);
        // A save that failed: its rows are given again.
        assert_eq!(recent.rows().insert.len(), 1);
        let second = recent.rows();
        recent.saved(second.mark());
        assert_eq!((second.clear, second.drop_below, second.insert.len()), (false, 5, 1));
        assert_eq!(second.horizon_ms, 1_000);

        let mut disk: std::collections::BTreeMap<u64, Vec<u8>> = first.insert.into_iter().collect();
        disk.retain(|n, _| *n >= second.drop_below);
        disk.extend(second.insert);
        let loaded =
            Recent::from_saved(Saved { rows: disk.into_iter().collect(), horizon_ms: second.horizon_ms })
                .unwrap();
        assert_eq!(loaded.to_proto(), recent.to_proto());
        assert_eq!(loaded.get(&ProposalId(5)), Some(&seen(5, 200_000)));

        let (rows, horizon) = recent.to_proto();
        let mut installed = Recent::from_proto(rows, horizon).unwrap();
        assert_eq!(installed.to_proto(), recent.to_proto());
        let rows = installed.rows();
        assert!(rows.clear && rows.insert.len() == 1 && rows.horizon_ms == 1_000, "{rows:?}");
        installed.saved(rows.mark());
        assert!(!installed.rows().clear);
    }

    #[test]
    fn ids_noted_while_a_save_runs_stay_unsaved() {
        let mut recent = Recent::default();
        recent.note(ProposalId(1), seen(1, 1_000));
        let running = recent.rows();
        // Decided while `running` is being committed.
        recent.note(ProposalId(2), seen(2, 1_000));
        recent.saved(running.mark());
        let next = recent.rows();
        assert_eq!(next.insert.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1]);
        // A save noted late (after a later one) takes nothing back.
        recent.saved(next.mark());
        recent.saved(running.mark());
        assert!(recent.rows().insert.is_empty());

        // A replaced table stays to be cleared until a save of its own rows.
        let (rows, horizon) = recent.to_proto();
        let mut installed = Recent::from_proto(rows, horizon).unwrap();
        let clearing = installed.rows();
        installed.note(ProposalId(3), seen(3, 1_000));
        installed.saved(clearing.mark());
        let after = installed.rows();
        assert!(!after.clear && after.insert.len() == 1, "{after:?}");
    }

    #[test]
    fn a_malformed_row_is_refused_naming_it() {
        let mut bad = Recent::row(ProposalId(1), &seen(1, 1));
        bad.id = vec![0; 3];
        let e = Recent::from_proto(vec![Recent::row(ProposalId(2), &seen(1, 1)), bad], 0).unwrap_err();
        assert!(e.to_string().contains("decided[1].id"), "{e}");
        let e = Recent::from_saved(Saved { rows: vec![(0, vec![0xff, 0xff])], horizon_ms: 0 }).unwrap_err();
        assert!(e.to_string().contains("decided[0]"), "{e}");
    }
}

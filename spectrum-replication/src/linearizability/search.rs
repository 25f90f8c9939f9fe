//! The search for one key: Wing & Gong's backtracking over the history's call and
//! return entries, with Lowe's cache of configurations already explored.

use std::collections::{HashMap, HashSet};

use super::history::{Command, Operation, Response};

/// A register value, interned per key: `ABSENT` or an index into the key's values.
type Value = u32;

const ABSENT: Value = 0;

/// What linearizing one operation does to the register: a precondition on the
/// value before, and the value after.
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// A read that answered `v`: the value must be `v`; unchanged.
    Saw(Value),
    /// A write or delete (answered, or of unknown outcome): the value becomes `v`.
    Set(Value),
    /// A compare-and-set that answered ok: the value must be `expected`, then becomes `new`.
    Swapped { expected: Value, new: Value },
    /// A compare-and-set that answered failed: the value must not be `expected`; unchanged.
    Refused { expected: Value },
    /// A compare-and-set of unknown outcome: `new` if the value is `expected`, else unchanged.
    Tried { expected: Value, new: Value },
}

impl Effect {
    /// The value after this operation takes effect on `state`, or `None` if its
    /// answer rules that out.
    fn apply(self, state: Value) -> Option<Value> {
        match self {
            Effect::Saw(v) => (state == v).then_some(state),
            Effect::Set(v) => Some(v),
            Effect::Swapped { expected, new } => (state == expected).then_some(new),
            Effect::Refused { expected } => (state != expected).then_some(state),
            Effect::Tried { expected, new } => Some(if state == expected { new } else { state }),
        }
    }
}

/// How the search for one key ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Search {
    /// A linearization exists.
    Linearizable,
    /// None exists. `order` is the longest partial linearization found (indices
    /// into the operations given), `stuck` the operation whose completion it
    /// could not get past.
    Violation { order: Vec<usize>, stuck: usize },
    /// The budget ran out first.
    Unknown(Exhausted),
}

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exhausted {
    /// The step budget.
    Steps,
    /// The cache's memory budget.
    Memory,
}

/// Limits of one search.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub(super) steps: u64,
    pub(super) cache_bytes: usize,
}

/// One call or return entry of the history, as a node of a doubly linked list.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The operation (index into the search's effects).
    op: usize,
    /// For a call, its return's node; `None` for a return.
    ret: Option<usize>,
    /// A return at the end of time: the completion of an operation of unknown outcome.
    endless: bool,
    prev: usize,
    next: usize,
}

/// The entries of one key's operations, linked in time order, with a head and a
/// tail sentinel; unlinked and relinked in LIFO order ("dancing links").
struct Entries {
    nodes: Vec<Node>,
    head: usize,
    tail: usize,
}

impl Entries {
    /// Calls and returns of `ops` in time order. At equal times calls come
    /// first, so operations whose intervals touch count as concurrent (as in
    /// porcupine). Returns of operations without completion come last.
    fn new(ops: &[&Operation]) -> Entries {
        // (time class, time, return?, op): class 1 is the end of time.
        let mut events: Vec<(u8, u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((0, op.invoked, false, i));
            match &op.completion {
                Some(c) => events.push((0, c.at, true, i)),
                None => events.push((1, 0, true, i)),
            }
        }
        events.sort_unstable();
        let n = events.len();
        let (head, tail) = (n, n + 1);
        let mut nodes: Vec<Node> = (0..n + 2)
            .map(|i| Node { op: usize::MAX, ret: None, endless: false, prev: i.wrapping_sub(1), next: i + 1 })
            .collect();
        nodes[0].prev = head;
        nodes[head].next = if n == 0 { tail } else { 0 };
        nodes[tail].prev = if n == 0 { head } else { n - 1 };
        if n > 0 {
            nodes[n - 1].next = tail;
        }
        let mut call_of = vec![usize::MAX; ops.len()];
        for (i, &(class, _, is_return, op)) in events.iter().enumerate() {
            nodes[i].op = op;
            nodes[i].endless = class == 1;
            if is_return {
                nodes[call_of[op]].ret = Some(i);
            } else {
                call_of[op] = i;
            }
        }
        Entries { nodes, head, tail }
    }

    fn unlink(&mut self, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    fn relink(&mut self, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        self.nodes[prev].next = i;
        self.nodes[next].prev = i;
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.nodes[call].ret {
            self.unlink(ret);
        }
    }

    /// Undoes the last [`Entries::lift`].
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.nodes[call].ret {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fixed-size set of operation indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
}

/// The effects of `ops` on one register (starting absent), values interned.
/// Reads of unknown outcome are left out (they change nothing): `None` there.
fn effects<'a>(ops: &[&'a Operation]) -> Vec<Option<Effect>> {
    let mut values: HashMap<&'a str, Value> = HashMap::new();
    let mut intern = |v: Option<&'a str>| -> Value {
        let Some(v) = v else { return ABSENT };
        let next = Value::try_from(values.len() + 1).unwrap_or(Value::MAX);
        *values.entry(v).or_insert(next)
    };
    ops.iter()
        .map(|op| {
            let response = op.completion.as_ref().map(|c| &c.response);
            Some(match (&op.command, response) {
                (Command::Read, None) => return None,
                (Command::Read, Some(Response::Read(v))) => Effect::Saw(intern(v.as_deref())),
                (Command::Write { value }, _) => Effect::Set(intern(Some(value))),
                (Command::Delete, _) => Effect::Set(ABSENT),
                (Command::CompareAndSet { expected, new }, response) => {
                    let (expected, new) = (intern(expected.as_deref()), intern(Some(new)));
                    match response {
                        Some(Response::Failed) => Effect::Refused { expected },
                        Some(_) => Effect::Swapped { expected, new },
                        None => Effect::Tried { expected, new },
                    }
                }
                // `History::new` refuses a read that answered anything but a value.
                (Command::Read, Some(_)) => Effect::Saw(Value::MAX),
            })
        })
        .collect()
}

/// Whether `ops` (all on one key) are linearizable, within `budget`; `explain`
/// records the longest partial linearization for a violation's report.
pub(super) fn search(ops: &[&Operation], budget: Budget, explain: bool) -> (Search, u64) {
    let effects = effects(ops);
    let kept: Vec<usize> = (0..ops.len()).filter(|&i| effects[i].is_some()).collect();
    let kept_ops: Vec<&Operation> = kept.iter().map(|&i| ops[i]).collect();
    let kept_effects: Vec<Effect> = effects.into_iter().flatten().collect();
    let (result, steps) = run(&kept_ops, &kept_effects, budget, explain);
    let result = match result {
        Search::Violation { order, stuck } => {
            Search::Violation { order: order.into_iter().map(|i| kept[i]).collect(), stuck: kept[stuck] }
        }
        other => other,
    };
    (result, steps)
}

/// The backtracking search itself (Lowe 2017, figure 2; porcupine's `checkSingle`).
fn run(ops: &[&Operation], effects: &[Effect], budget: Budget, explain: bool) -> (Search, u64) {
    let mut entries = Entries::new(ops);
    let mut linearized = Bits::new(ops.len());
    let mut cache: HashSet<(Bits, Value)> = HashSet::new();
    let entry_bytes = linearized.0.len() * 8 + 48;
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let (mut best, mut stuck) = (Vec::new(), None);
    let mut state = ABSENT;
    let mut entry = entries.nodes[entries.head].next;
    let mut steps = 0u64;
    loop {
        if entry == entries.tail || entries.nodes[entry].endless {
            return (Search::Linearizable, steps);
        }
        steps += 1;
        if steps > budget.steps {
            return (Search::Unknown(Exhausted::Steps), steps);
        }
        let node = entries.nodes[entry];
        if node.ret.is_some() {
            if let Some(next) = effects[node.op].apply(state) {
                linearized.flip(node.op);
                if cache.insert((linearized.clone(), next)) {
                    if cache.len().saturating_mul(entry_bytes) > budget.cache_bytes {
                        return (Search::Unknown(Exhausted::Memory), steps);
                    }
                    stack.push((entry, state));
                    state = next;
                    entries.lift(entry);
                    if explain && stack.len() > best.len() {
                        best = stack.iter().map(|&(e, _)| entries.nodes[e].op).collect();
                        stuck = None;
                    }
                    entry = entries.nodes[entries.head].next;
                    continue;
                }
                linearized.flip(node.op);
            }
            entry = node.next;
        } else {
            // A return whose call is not linearized yet: this branch is dead.
            if explain && stack.len() == best.len() && stuck.is_none() {
                stuck = Some(node.op);
            }
            let Some((call, before)) = stack.pop() else {
                let stuck = stuck.unwrap_or(node.op);
                return (Search::Violation { order: best, stuck }, steps);
            };
            let op = entries.nodes[call].op;
            linearized.flip(op);
            state = before;
            entries.unlift(call);
            entry = entries.nodes[call].next;
        }
    }
}

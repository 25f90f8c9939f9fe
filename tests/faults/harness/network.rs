//! Network partitions with iptables inside the run's namespace.
//!
//! Nodes do not bind a source address when they call each other, so on loopback
//! every packet comes *from* 127.0.0.1 and a rule on source addresses cannot tell
//! nodes apart. Each node runs as its own uid instead ([`node_uid`]), and a
//! `mangle` rule stamps every connection a node *opens* with a connection mark (its
//! index + 1). A cut from node A to node B then drops every packet, both ways, of
//! the connections marked A whose original destination is B's address: A can no
//! longer reach B, while B may still open connections to A (a one-way cut); two cuts
//! make a partition. Connections already open when a cut starts are cut too (the
//! mark is on the connection), and healing flushes the chain.

use std::net::Ipv4Addr;

use super::sandbox::{CHAIN, run};

/// The uid the balancer runs as (its connections carry no mark: never cut).
pub(crate) const BALANCER_UID: u32 = 20000;

/// The loopback address of node `index` (0-based): 127.0.0.2, 127.0.0.3, …
pub(crate) fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, u8::try_from(index + 2).expect("fewer than 250 nodes"))
}

/// The uid node `index` runs as.
pub(crate) fn node_uid(index: usize) -> u32 {
    BALANCER_UID + 1 + u32::try_from(index).expect("few nodes")
}

fn mark(index: usize) -> String {
    (index + 1).to_string()
}

/// Creates the partition chain and the connection-marking rules for `nodes` nodes.
pub(crate) fn prepare(nodes: usize) {
    run("iptables", &["-N", CHAIN]);
    run("iptables", &["-A", "OUTPUT", "-j", CHAIN]);
    for index in 0..nodes {
        let uid = node_uid(index).to_string();
        let mark = mark(index);
        run(
            "iptables",
            &[
                "-t",
                "mangle",
                "-A",
                "OUTPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "owner",
                "--uid-owner",
                &uid,
                "-j",
                "CONNMARK",
                "--set-mark",
                &mark,
            ],
        );
    }
}

/// Drops every connection node `from` opens to node `to` (both directions of it).
pub(crate) fn cut(from: usize, to: usize) {
    let mark = mark(from);
    let dest = node_ip(to).to_string();
    run(
        "iptables",
        &[
            "-A",
            CHAIN,
            "-m",
            "connmark",
            "--mark",
            &mark,
            "-m",
            "conntrack",
            "--ctorigdst",
            &dest,
            "-j",
            "DROP",
        ],
    );
}

/// Removes every cut.
pub(crate) fn heal() {
    run("iptables", &["-F", CHAIN]);
}

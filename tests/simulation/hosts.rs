//! What both simulated clusters (last-writer-wins in `cluster`, Raft in
//! `raft`) do alike with their turmoil hosts: cut and restore links, restart
//! crashed nodes, heal everything, and run simulated time.

use std::time::Duration;

/// A simulated cluster of turmoil hosts, node `i` on host [`host`](Hosts::host)`(i)`.
pub(crate) trait Hosts {
    /// The simulation.
    fn sim(&mut self) -> &mut turmoil::Sim<'static>;
    /// The turmoil host name of node `node`.
    fn host(&self, node: usize) -> String;
    /// How many nodes there are.
    fn len(&self) -> usize;
    /// Adds a scripted change to the run's trace, at the current simulated time.
    fn note(&self, what: String);

    /// Cuts the link between two nodes, both ways.
    fn partition(&mut self, a: usize, b: usize) {
        let (a, b) = (self.host(a), self.host(b));
        self.note(format!("partition {a} {b}"));
        self.sim().partition(a.as_str(), b.as_str());
    }

    /// Restores the link between two nodes.
    fn repair(&mut self, a: usize, b: usize) {
        let (a, b) = (self.host(a), self.host(b));
        self.note(format!("repair {a} {b}"));
        self.sim().repair(a.as_str(), b.as_str());
    }

    /// Starts a crashed node's software again, over what it had stored.
    fn restart(&mut self, node: usize) {
        let host = self.host(node);
        self.note(format!("restart {host}"));
        self.sim().bounce(host.as_str());
    }

    /// Whether a node's software is running.
    fn is_running(&mut self, node: usize) -> bool {
        let host = self.host(node);
        self.sim().is_host_running(host.as_str())
    }

    /// Restores every link and restarts every crashed node.
    fn heal(&mut self) {
        for a in 0..self.len() {
            for b in a + 1..self.len() {
                let (x, y) = (self.host(a), self.host(b));
                self.sim().repair(x.as_str(), y.as_str());
            }
        }
        self.note("heal".into());
        for node in 0..self.len() {
            if !self.is_running(node) {
                self.restart(node);
            }
        }
    }

    /// Runs the simulation for `duration` of simulated time.
    fn run_for(&mut self, duration: Duration) {
        let until = self.sim().elapsed() + duration;
        while self.sim().elapsed() < until {
            self.sim().step().expect("the simulated nodes keep running");
        }
    }
}

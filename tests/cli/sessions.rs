//! `--session FILE` (`SPECTRUM_SESSION`): commands through the balancer read the
//! writes of earlier commands that shared the file.

use crate::ProcessCluster;

#[test]
fn commands_sharing_a_session_file_read_their_own_writes_through_the_balancer() {
    let cluster = ProcessCluster::start("cli-session", 3, "session-token");
    let file = cluster.path("session");
    let session = file.to_str().unwrap();
    for round in 0..5 {
        let value = format!("v{round}");
        cluster.ok(&["--session", session, "config", "put", "settings/colour", &value, "--ack", "local"]);
        let kept = std::fs::read_to_string(&file).expect("the write saved the session");
        assert!(kept.trim().split(',').all(|entry| entry.contains(':')), "{kept}");
        let got = cluster.json(&["--session", session, "config", "get", "settings/colour"]);
        assert_eq!(got["value"], value.as_str(), "round {round}: {got}");
    }
    // A session no node holds, and a read wait longer than the client's usual
    // 10 s: the node's own refusal, naming what is missing, comes back, not
    // the client's timeout.
    std::fs::write(&file, "node-9~00000000000000aa:5\n").unwrap();
    let args = ["--session", session, "--read-wait-ms", "10500", "config", "get", "settings/colour"];
    let out = cluster.run_at(&cluster.nodes[0].1, Some(&cluster.token), &args);
    let line = crate::expect_failure(&out, &args, "(Unavailable)");
    assert!(line.contains("node-9~00000000000000aa") && !line.contains("request timeout"), "{line}");
    cluster.fails(&["--read-wait-ms", "40000", "config", "get", "settings/colour"], "30000");

    std::fs::write(&file, "not a session\n").unwrap();
    cluster.fails(&["--session", session, "config", "get", "settings/colour"], "is not a session");
}

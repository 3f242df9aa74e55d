//! Classic-watchdog options: `combine_output` (stderr in the response) and `marshal_request`
//! (the JSON envelope; its byte-for-byte check against Go is in interop.rs).

mod common;

use std::time::Duration;

const STARTUP: Duration = Duration::from_secs(10);

use common::*;

#[test]
fn combine_output_puts_stderr_in_the_response_in_the_order_written_in_both_fork_modes() {
    let dir = TempDir::new("combine");
    let f = dir.script("f", "echo out1; echo err1 >&2; sleep 0.1; echo out2; echo err2 >&2");
    for mode in ["streaming", "serializing"] {
        let mut wd = Watchdog::start(&[("mode", mode), ("fprocess", &f), ("combine_output", "true")]);
        let r = wd.post("/", b"");
        assert_eq!((r.status, r.text().as_str()), (200, "out1\nerr1\nout2\nerr2\n"), "{mode}");
        let mut plain = Watchdog::start(&[("mode", mode), ("fprocess", &f)]);
        let r = plain.post("/", b"");
        assert_eq!((r.status, r.text().as_str()), (200, "out1\nout2\n"), "{mode} without combine_output");
        plain.wait_log("err2", Duration::from_secs(10));
        assert!(!wd.output.stderr().contains("err1"), "{mode}: combined stderr is not logged too");
        wd.wait_log("POST / - 200", Duration::from_secs(10));
    }
}

#[test]
fn marshal_request_gives_the_function_the_envelope() {
    let wd = Watchdog::start(&[("mode", "serializing"), ("fprocess", "cat"), ("marshal_request", "true")]);
    let r = wd.request("POST", "/", &[("X-Test", "yes")], b"hi");
    let text = r.text();
    assert!(text.starts_with("{\"header\":{"), "{text}");
    assert!(text.contains("\"X-Test\":[\"yes\"]"), "{text}");
    assert!(text.ends_with(",\"body\":{\"raw\":\"aGk=\"}}"), "{text}");
}

#[test]
fn the_options_warn_where_they_do_not_apply() {
    let mut wd = Watchdog::start(&[("mode", "streaming"), ("fprocess", "cat"), ("marshal_request", "true")]);
    wd.wait_log("marshal_request applies to mode=serializing only", Duration::from_secs(10));
    assert_eq!(wd.post("/", b"raw").text(), "raw");
    let mut quiet =
        Watchdog::start(&[("mode", "serializing"), ("fprocess", "cat"), ("combine_output", "true")]);
    quiet.wait_log("Listening on port", Duration::from_secs(10));
    assert!(!quiet.output.all().contains("classic-watchdog option"), "{}", quiet.output.all());
}

#[test]
fn read_debug_and_write_debug_log_the_first_bytes_of_each_body() {
    let body = b"line one\nline two, longer than sixteen";
    for mode in ["streaming", "serializing"] {
        let mut wd = Watchdog::start(&[
            ("mode", mode),
            ("fprocess", "cat"),
            ("read_debug", "true"),
            ("write_debug", "true"),
            ("log_buffer_size", "16"),
        ]);
        assert_eq!(wd.post("/x", body).body, body, "{mode}");
        wd.wait_log(r"POST /x request body, 38 bytes (the first 16 shown): line one\nline tw", STARTUP);
        wd.wait_log(r"POST /x response body, 38 bytes (the first 16 shown): line one\nline tw", STARTUP);
        // A large streamed answer is logged in part and still sent whole (no splice).
        let big = vec![b'z'; 300_000];
        assert_eq!(wd.post("/big", &big).body.len(), big.len(), "{mode}");
        wd.wait_log("POST /big response body, 300000 bytes (the first 16 shown): zzzzzzzzzzzzzzzz", STARTUP);
    }
    let mut plain = Watchdog::start(&[("fprocess", "cat")]);
    plain.post("/x", body);
    plain.wait_log("POST /x - 200", STARTUP);
    assert!(!plain.output.all().contains("request body,"), "{}", plain.output.all());
}

//! static mode, attacks included.

mod common;

use std::os::unix::fs::symlink;

use common::*;

struct Site {
    _dir: TempDir,
    wd: Watchdog,
}

fn site() -> Site {
    let dir = TempDir::new("site");
    std::fs::write(dir.path("secret.txt"), "TOPSECRET").expect("secret");
    let root = dir.path("public");
    let files: &[(&str, &[u8])] = &[
        ("index.html", b"<h1>home</h1>"),
        ("style.css", b"body{}"),
        ("app.js", b"var x=1;"),
        ("data.json", b"{}"),
        ("notes.txt", b"hello notes"),
        ("page", b"<!DOCTYPE html><p>no extension</p>"),
        ("blob", b"\x00\x01\x02\x03binary"),
        ("plain", b"just words\n"),
        ("sub/index.html", b"<p>sub</p>"),
        ("sub/page.html", b"<p>page</p>"),
        ("empty/a.txt", b"A"),
        ("sub/deep/x.txt", b"X"),
        ("a:b/x.txt", b"X"),
        (".env", b"SECRET_ENV=1"),
        (".git/config", b"[core] SECRET"),
        ("with space.txt", b"spaced"),
    ];
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    symlink(dir.path("secret.txt"), root.join("escape.txt")).expect("symlink out");
    symlink(dir.path("."), root.join("up")).expect("symlink dir out");
    symlink(root.join("notes.txt"), root.join("inside.txt")).expect("symlink in");
    let root_str = root.to_string_lossy().into_owned();
    let wd = Watchdog::start(&[("mode", "static"), ("static_path", &root_str)]);
    Site { _dir: dir, wd }
}

#[test]
fn files_are_served_with_types_by_extension_or_content() {
    let s = site();
    for (path, ctype, body) in [
        ("/style.css", "text/css; charset=utf-8", &b"body{}"[..]),
        ("/app.js", "text/javascript; charset=utf-8", b"var x=1;"),
        ("/data.json", "application/json", b"{}"),
        ("/notes.txt", "text/plain; charset=utf-8", b"hello notes"),
        ("/page", "text/html; charset=utf-8", b"<!DOCTYPE html><p>no extension</p>"),
        ("/blob", "application/octet-stream", b"\x00\x01\x02\x03binary"),
        ("/plain", "text/plain; charset=utf-8", b"just words\n"),
        ("/with%20space.txt", "text/plain; charset=utf-8", b"spaced"),
        ("/inside.txt", "text/plain; charset=utf-8", b"hello notes"),
    ] {
        let r = s.wd.get(path);
        assert_eq!(
            (r.status, r.header("Content-Type"), r.body.as_slice()),
            (200, Some(ctype), body),
            "{path}"
        );
        assert!(r.header("Last-Modified").is_some(), "{path}");
    }
}

#[test]
fn directories_serve_index_html_and_redirect_to_their_slash() {
    let s = site();
    assert_eq!(s.wd.get("/").text(), "<h1>home</h1>");
    assert_eq!(s.wd.get("/sub/").text(), "<p>sub</p>");
    // Relative, so that behind the gateway /function/site/sub goes to /function/site/sub/.
    let r = s.wd.get("/sub?x=1");
    assert_eq!((r.status, r.header("Location")), (301, Some("sub/?x=1")));
    let r = s.wd.get("//sub");
    assert_eq!(r.header("Location"), Some("sub/"), "never a protocol-relative //host redirect");
    assert_eq!(s.wd.get("/sub/deep").header("Location"), Some("deep/"));
    assert_eq!(s.wd.get("/a:b").header("Location"), Some("./a:b/"), "not a URL with scheme a:");
    let r = s.wd.get("/sub/index.html");
    assert_eq!((r.status, r.header("Location")), (301, Some("./")));
}

#[test]
fn no_listing_no_dotfiles_no_escape() {
    let s = site();
    for path in [
        "/empty/",
        "/.env",
        "/.git/config",
        "/.git/",
        "/escape.txt",
        "/up/secret.txt",
        "/missing",
        "/sub/missing/deeper",
    ] {
        let r = s.wd.get(path);
        assert!(matches!(r.status, 403 | 404), "{path}: {}", r.status);
        assert!(!r.text().contains("SECRET") && !r.text().contains("a.txt"), "{path}: {}", r.text());
    }
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "//../secret.txt",
        "/.%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/sub/..%5c..%5csecret.txt",
        "/%00/secret.txt",
    ] {
        let r = s.wd.get(path);
        assert!(!r.text().contains("TOPSECRET"), "{path}");
        assert!(matches!(r.status, 301 | 400 | 403 | 404), "{path}: {}", r.status);
    }
}

#[test]
fn head_ranges_and_conditional_requests() {
    let s = site();
    let r = s.wd.request("HEAD", "/notes.txt", &[], b"");
    assert_eq!((r.status, r.header("Content-Length"), r.body.len()), (200, Some("11"), 0));
    let r = s.wd.request("GET", "/notes.txt", &[("Range", "bytes=6-10")], b"");
    assert_eq!(
        (r.status, r.text().as_str(), r.header("Content-Range")),
        (206, "notes", Some("bytes 6-10/11"))
    );
    let r = s.wd.request("GET", "/notes.txt", &[("Range", "bytes=-5")], b"");
    assert_eq!((r.status, r.text().as_str()), (206, "notes"));
    let r = s.wd.request("GET", "/notes.txt", &[("Range", "bytes=50-")], b"");
    assert_eq!((r.status, r.header("Content-Range")), (416, Some("bytes */11")));
    let last_modified = s.wd.get("/notes.txt").header("Last-Modified").expect("Last-Modified").to_string();
    let r = s.wd.request("GET", "/notes.txt", &[("If-Modified-Since", &last_modified)], b"");
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = s.wd.request("GET", "/notes.txt", &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")], b"");
    assert_eq!(r.status, 200);
    let r = s.wd.request("POST", "/notes.txt", &[], b"x");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
}

#[test]
fn large_files_stream_in_bounded_memory() {
    let dir = TempDir::new("bigfile");
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path("big.bin"), &data).expect("write");
    let root = dir.0.to_string_lossy().into_owned();
    let wd = Watchdog::start(&[("mode", "static"), ("static_path", &root)]);
    let r = wd.get("/big.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == data, "{} bytes back", r.body.len());
    let peak = wd.rss_kb("VmHWM:");
    assert!(peak < 16 * 1024, "peak RSS {peak} KiB serving a 64 MiB file");
}

use super::*;
use std::os::unix::fs::symlink;

const ROOT: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn write(dir: &Path, name: impl AsRef<Path>, body: &str) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(name), body).expect("write");
}

fn batch(id: &str) -> String {
    format!(r#"{{"id":"{id}","root":"{ROOT}"}}"#)
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

/// The latest batch of `dir` as its id, or the error's text.
fn latest_id(dir: &Path) -> String {
    match latest_in(dir, &mut Unwatched) {
        Ok(Some(b)) => b.id,
        Ok(None) => "none".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// A watch that runs `act` before each step, with the step's path.
struct Acting<F: FnMut(&Path)>(F);

impl<F: FnMut(&Path)> Watch for Acting<F> {
    fn step(&mut self, path: &Path) -> Result<(), BatchError> {
        (self.0)(path);
        Ok(())
    }
}

#[test]
fn picks_the_lexically_last_json_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("out/batches");
    write(&dir, "0001.json", &batch("b1"));
    write(&dir, "0002.json", &format!(r#"{{"id":"b2","root":"{ROOT}","leaves":[1,2]}}"#));
    write(&dir, "0003.json.tmp", "garbage");
    write(&dir, ".0004.json", "garbage");
    let batch = latest(tmp.path(), "any").expect("readable").expect("present");
    assert_eq!(batch.id, "b2");
    assert_eq!(batch.root_string(), ROOT);
}

#[test]
fn a_namespace_folder_takes_precedence() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(&tmp.path().join("out/batches"), "9.json", &batch("shared"));
    write(&tmp.path().join("out/batches/dao:vaultmesh"), "1.json", &batch("own"));
    assert_eq!(latest(tmp.path(), "dao:vaultmesh").expect("ok").expect("some").id, "own");
    assert_eq!(latest(tmp.path(), "other").expect("ok").expect("some").id, "shared");
}

#[test]
fn no_batch_is_not_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(latest(tmp.path(), "x").expect("ok").is_none());
    fs::create_dir_all(tmp.path().join("out/batches")).expect("mkdir");
    assert!(latest(tmp.path(), "x").expect("ok").is_none());
}

#[test]
fn malformed_batches_are_rejected_with_a_reason() {
    for body in [
        "not json",
        r#"{"id":"x"}"#,
        r#"{"id":"x","root":"00112233"}"#,
        r#"{"id":"x","root":"sha256:zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
        r#"{"id":"","root":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
        r#"{"id":[1],"root":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
    ] {
        assert!(parse(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn a_named_pipe_or_a_link_to_one_is_refused_without_waiting_for_a_writer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (direct, linked) = (tmp.path().join("direct"), tmp.path().join("linked"));
    write(&direct, "0001.json", &batch("older"));
    mkfifo(&direct.join("0002.json"));
    write(&linked, "0001.json", &batch("older"));
    mkfifo(&tmp.path().join("pipe"));
    symlink(tmp.path().join("pipe"), linked.join("0002.json")).expect("symlink");
    for dir in [&direct, &linked] {
        let got = latest_id(dir);
        let file = dir.join("0002.json");
        let want = format!("{} is a named pipe, not a regular file", file.display());
        assert!(got.contains(&want), "{got}");
    }
}

#[test]
fn sockets_and_devices_are_refused_without_being_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &str); 4] = [
        ("socket", "socket"),
        ("/dev/zero", "character device"),
        ("/dev/urandom", "character device"),
        ("/dev/null", "character device"),
    ];
    for (i, (what, kind)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("d{i}"));
        write(&dir, "0001.json", &batch("older"));
        let entry = dir.join("0002.json");
        if *what == "socket" {
            let _listener = std::os::unix::net::UnixListener::bind(&entry).expect("bind a socket");
            assert!(latest_id(&dir).contains(&format!("{} is a {kind}", entry.display())), "{what}");
            let linked = tmp.path().join(format!("l{i}"));
            write(&linked, "0001.json", &batch("older"));
            symlink(&entry, linked.join("0002.json")).expect("symlink");
            let got = latest_id(&linked);
            assert!(got.contains(&format!("0002.json is a {kind}")), "a link to a {what}: {got}");
        } else {
            symlink(what, &entry).expect("symlink");
            let got = latest_id(&dir);
            assert!(got.contains(&format!("{} is a {kind}", entry.display())), "a link to {what}: {got}");
        }
    }
}

#[test]
fn folders_named_like_batches_are_skipped_also_through_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    write(&dir, "0001.json", &batch("b1"));
    // A namespace named `0002.json` has its own folder in the shared one.
    fs::create_dir_all(dir.join("0002.json")).expect("mkdir");
    fs::create_dir_all(tmp.path().join("elsewhere")).expect("mkdir");
    symlink(tmp.path().join("elsewhere"), dir.join("0003.json")).expect("symlink");
    assert_eq!(latest_id(&dir), "b1");
    // Behind more links to folders than one listing keeps, the batch is still found.
    for i in 0..CANDIDATES + 4 {
        symlink(tmp.path().join("elsewhere"), dir.join(format!("1{i:03}.json"))).expect("symlink");
    }
    assert_eq!(latest_id(&dir), "b1");
}

#[test]
fn a_link_loop_or_a_link_to_nothing_fails_naming_the_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let looped = tmp.path().join("loop");
    write(&looped, "0001.json", &batch("older"));
    symlink("0002.json", looped.join("0002.json")).expect("symlink");
    let got = latest_id(&looped);
    assert!(got.contains("0002.json") && got.contains("symbolic links"), "{got}");
    let dangling = tmp.path().join("dangling");
    write(&dangling, "0001.json", &batch("older"));
    symlink(tmp.path().join("gone"), dangling.join("0002.json")).expect("symlink");
    let got = latest_id(&dangling);
    let want = format!("{} is a link to something that does not exist", dangling.join("0002.json").display());
    assert!(got.contains(&want), "{got}");
}

#[test]
fn a_namespace_folder_that_cannot_be_looked_at_is_an_error_not_the_shared_batches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shared = tmp.path().join("out/batches");
    write(&shared, "0001.json", &batch("shared"));
    symlink(tmp.path().join("gone"), shared.join("dangling")).expect("symlink");
    symlink("looped", shared.join("looped")).expect("symlink");
    let got = latest(tmp.path(), "dangling").map(|b| b.map(|b| b.id)).map_err(|e| e.to_string());
    assert!(got.as_ref().is_err_and(|e| e.contains("dangling is a link to something that does not exist")), "{got:?}");
    let got = latest(tmp.path(), "looped").map(|b| b.map(|b| b.id)).map_err(|e| e.to_string());
    assert!(got.as_ref().is_err_and(|e| e.contains("looped") && e.contains("symbolic links")), "{got:?}");
    // A link to a folder is the namespace's folder; a file named like the namespace is not.
    write(&tmp.path().join("kept"), "0001.json", &batch("linked"));
    symlink(tmp.path().join("kept"), shared.join("linked")).expect("symlink");
    write(&shared, "0002.json", &batch("shared-2"));
    assert_eq!(latest(tmp.path(), "linked").expect("ok").expect("some").id, "linked");
    assert_eq!(latest(tmp.path(), "0002.json").expect("ok").expect("some").id, "shared-2");
}

#[test]
fn a_file_of_exactly_the_limit_is_read_and_one_byte_more_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let body = batch("at-limit");
    let mut bytes = body.into_bytes();
    bytes.resize(usize::try_from(MAX_BATCH_BYTES).expect("fits"), b' ');
    fs::write(tmp.path().join("0001.json"), &bytes).expect("write");
    assert_eq!(latest_id(tmp.path()), "at-limit");
    bytes.push(b' ');
    fs::write(tmp.path().join("0001.json"), &bytes).expect("write");
    assert!(latest_id(tmp.path()).contains("is larger than 32 MiB"));
    fs::write(tmp.path().join("0001.json"), "").expect("write");
    assert!(latest_id(tmp.path()).contains("EOF while parsing"), "an empty file is malformed");
}

#[test]
fn a_file_that_grows_while_it_is_read_is_refused_at_the_limit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("0001.json");
    fs::write(&file, batch("b1")).expect("write");
    // A writer appending in place faster than the file is read.
    let mut grow = Acting(|path: &Path| {
        if path == file {
            let mut f = fs::OpenOptions::new().append(true).open(path).expect("open to append");
            std::io::Write::write_all(&mut f, &[b' '; 64 * 1024]).expect("append");
        }
    });
    let got = latest_in(tmp.path(), &mut grow).map_err(|e| e.to_string());
    assert!(got.as_ref().is_err_and(|e| e.contains("is larger than 32 MiB")), "{got:?}");
}

#[test]
fn a_file_that_keeps_changing_while_it_is_read_is_refused_and_one_that_settles_is_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("0001.json");
    fs::write(&file, batch("b1")).expect("write");
    // A writer rewriting the file in place, shorter each time, before every step.
    let mut writes = 0;
    let mut rewrite = Acting(|path: &Path| {
        if path == file {
            writes += 1;
            fs::write(path, format!("{:<1$}", batch("again"), 1_000 - writes)).expect("rewrite");
        }
    });
    let got = latest_in(tmp.path(), &mut rewrite).map_err(|e| e.to_string());
    let want = format!("{} changed while it was read (3 times); write batches to a temporary name", file.display());
    assert!(got.as_ref().is_err_and(|e| e.contains(&want)), "{got:?}");
    // Rewritten twice, then left alone: what is read is the settled file.
    let mut writes = 0;
    let mut twice = Acting(|path: &Path| {
        if path == file && writes < 2 {
            writes += 1;
            fs::write(path, format!("{:<1$}", batch("settled"), 1_000 - writes)).expect("rewrite");
        }
    });
    assert_eq!(latest_in(tmp.path(), &mut twice).expect("read").expect("some").id, "settled");
}

#[test]
fn a_batch_removed_or_replaced_after_the_listing_or_while_it_is_read_is_not_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    write(&dir, "0001.json", &batch("b1"));
    write(&dir, "0002.json", &batch("b2"));
    let newest = dir.join("0002.json");
    let mut removed = false;
    let mut remove = Acting(|path: &Path| {
        if path == newest && !removed {
            removed = true;
            fs::remove_file(path).expect("remove");
        }
    });
    assert_eq!(latest_in(&dir, &mut remove).expect("read").expect("some").id, "b1");
    write(&dir, "0002.json", &batch("b2"));
    let mut replace = Acting(|path: &Path| {
        if path == newest {
            write(&dir, ".next", &batch("b2-replaced"));
            fs::rename(dir.join(".next"), path).expect("rename over");
        }
    });
    assert_eq!(latest_in(&dir, &mut replace).expect("read").expect("some").id, "b2-replaced");
    // Removed once open (its second step, the first read): the open file is read whole.
    let mut steps = 0;
    let mut remove_while_read = Acting(|path: &Path| {
        if path == newest {
            steps += 1;
            if steps == 2 {
                fs::remove_file(path).expect("remove");
            }
        }
    });
    assert_eq!(latest_in(&dir, &mut remove_while_read).expect("read").expect("some").id, "b2-replaced");
    assert!(!newest.exists());
}

#[test]
fn a_name_that_is_not_utf8_is_a_batch_like_any_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), "0001.json", &batch("b1"));
    write(tmp.path(), std::ffi::OsStr::from_bytes(b"0002-\xff\xfe.json"), &batch("b2"));
    assert_eq!(latest_id(tmp.path()), "b2");
}

#[test]
fn a_large_folder_is_listed_in_steps_and_its_read_ends_when_the_watch_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for i in 0..5_000 {
        fs::write(tmp.path().join(format!("{i:05}.txt")), "").expect("write");
    }
    write(tmp.path(), "0001.json", &batch("b1"));
    let mut steps = 0;
    let mut count = Acting(|_: &Path| steps += 1);
    assert_eq!(latest_in(tmp.path(), &mut count).expect("read").expect("some").id, "b1");
    assert!(steps >= 5, "{steps} steps for 5,001 entries");
    struct Budget(usize);
    impl Watch for Budget {
        fn step(&mut self, path: &Path) -> Result<(), BatchError> {
            self.0 = self.0.checked_sub(1).ok_or(BatchError::Slow { path: path.into(), limit: Duration::ZERO })?;
            Ok(())
        }
    }
    let got = latest_in(tmp.path(), &mut Budget(2)).map_err(|e| e.to_string());
    assert!(got.as_ref().is_err_and(|e| e.contains("took longer than 0s")), "{got:?}");
}

#[test]
fn read_refuses_what_is_not_a_regular_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    mkfifo(&tmp.path().join("pipe"));
    let e = read(&tmp.path().join("pipe")).expect_err("a pipe").to_string();
    assert!(e.contains("is a named pipe"), "{e}");
    let e = read(tmp.path()).expect_err("a folder").to_string();
    assert!(e.contains("is a folder"), "{e}");
    write(tmp.path(), "ok.json", &batch("ok"));
    assert_eq!(read(&tmp.path().join("ok.json")).expect("a batch").id, "ok");
}

#[test]
fn errors_about_a_batch_never_repeat_what_the_file_holds_and_stay_short() {
    let secret = "SECRET".repeat(200_000);
    let cases: Vec<(String, &str)> = vec![
        (format!("\"{secret}\""), "invalid type: string, expected struct BatchFile"),
        ("987654321".into(), "invalid type: integer, expected struct BatchFile"),
        (format!(r#"{{"id":"x","root":"{secret}"}}"#), "`root` must be"),
        (format!(r#"{{"id":["{secret}"],"root":"{ROOT}"}}"#), "`id` must be a string, not an array"),
        (format!(r#"{{"id":{{"k":"{secret}"}},"root":"{ROOT}"}}"#), "`id` must be a string, not an object"),
        (format!(r#"{{"id":true,"root":"{ROOT}"}}"#), "`id` must be a string, not a boolean"),
        (format!(r#"{{"id":null,"root":"{ROOT}"}}"#), "`id` must be a string, not null"),
        (r#"{"id":"x","root":987654321}"#.into(), "invalid type: integer, expected a string"),
    ];
    for (body, want) in cases {
        let e = parse(body.as_bytes()).expect_err(want);
        let shown: String = e.chars().take(300).collect();
        assert!(e.contains(want), "{shown}");
        assert!(!e.contains("SECRET".repeat(20).as_str()) && !e.contains("987654321"), "{shown}");
        assert!(e.len() < 300, "a {}-byte reason: {shown}…", e.len());
    }
    // Numbers are ids as they are written.
    for (id, text) in [("42", "42"), ("-7", "-7"), ("1.5", "1.5"), ("1e300", "1e+300")] {
        assert_eq!(parse(format!(r#"{{"id":{id},"root":"{ROOT}"}}"#).as_bytes()).expect("valid").0, text);
    }
    // An id nested too deep is refused by the parser's depth limit, as before.
    let deep = format!(r#"{{"id":{}1{},"root":"{ROOT}"}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse(deep.as_bytes()).expect_err("deep").contains("recursion limit exceeded"));
}

//! `ferrite run` as a user calls it: JSON lines on stdout, exit statuses, --stats.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn astronaut() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/astronaut.png")
}

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_looped_still_gives_one_track_that_appears_and_leaves() {
    let input = astronaut();
    let out = ferrite(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--loop",
        "--max-frames",
        "9",
        "--min-hits",
        "2",
        "--stats",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["appeared", "left"], "{lines:?}");
    for l in &lines {
        assert_eq!(l["schema"], 1);
        assert_eq!(l["track"], 1);
        assert_eq!(l["label"], "happy");
        assert!(l["box"][0].as_f64().unwrap() > 150.0);
    }
    assert!(lines[1]["duration"].as_f64().unwrap() >= 0.0);
    assert!(
        stderr.contains("whole frame"),
        "--stats table missing: {stderr}"
    );
    assert!(stderr.contains("frames 9"), "{stderr}");
}

#[test]
fn run_exit_statuses() {
    let input = astronaut();
    let input = input.to_str().unwrap();
    // Usage errors: 2.
    for bad in [
        vec!["run", "--input", input, "--smoothing", "0"],
        vec!["run", "--input", input, "--detect-every", "0"],
        vec!["run", "--input", input, "--no-json", "--json", "-"],
        vec!["run", "--input", input, "--size", "big"],
        vec!["run", "--input", input, "--ros2-domain", "3"],
    ] {
        assert_eq!(ferrite(&bad).status.code(), Some(2), "{bad:?}");
    }
    // Start-up failures: 3, with one line saying why.
    let no_camera = ferrite(&["run", "--input", "/dev/video99"]);
    assert_eq!(no_camera.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&no_camera.stderr).contains("/dev/video99"));
    let no_board = ferrite(&["run", "--board", "rpi9", "--input", input]);
    assert_eq!(no_board.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&no_board.stderr).contains("rpi5"));
    let not_a_camera = ferrite(&["run", "--input", "/dev/urandom"]);
    assert_eq!(not_a_camera.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&not_a_camera.stderr).contains("not a camera"));
    let missing = ferrite(&["run", "--input", "/nonexistent/frames"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/frames"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("missing-ca.pem");
    let bad_tls = ferrite(&[
        "run",
        "--input",
        input,
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-ca-file",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(bad_tls.status.code(), Some(3));
    let unwritable = ferrite(&[
        "run",
        "--input",
        input,
        "--json",
        "/nonexistent/dir/x.jsonl",
    ]);
    assert_eq!(unwritable.status.code(), Some(3));
    // A DDS domain past the RTPS port range, and a ROS name that cannot be one.
    for (flag, value, says) in [
        ("--ros2-domain", "233", "domain id must be 0-232"),
        ("--ros2-frame-id", "", "frame_id must not be empty"),
    ] {
        let bad_ros2 = ferrite(&["run", "--input", input, "--ros2", flag, value]);
        assert_eq!(bad_ros2.status.code(), Some(3), "{flag} {value:?}");
        let stderr = String::from_utf8_lossy(&bad_ros2.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    // The web view: an address that is not one, a token that cannot travel in a URL, and a
    // port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let expected_busy = if cfg!(feature = "web") {
        "cannot listen on"
    } else {
        "built without it"
    };
    for (args, says) in [
        (vec!["--web", "localhost"], "IP address and port"),
        (vec!["--web", "--web-token", "a b"], "token must be"),
        (vec!["--web", taken.as_str()], expected_busy),
    ] {
        let mut run = vec!["run", "--input", input, "--max-frames", "1"];
        run.extend(&args);
        let bad_web = ferrite(&run);
        assert_eq!(bad_web.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&bad_web.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn an_absurd_size_in_a_config_file_is_a_one_line_error_for_run_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferrite.toml");
    let png = dir.path().join("out.png");
    fs::write(
        &config,
        format!(
            "[display]\ndriver = \"png\"\npath = {:?}\nwidth = 60000\nheight = 60000\n",
            png.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let input = astronaut();
    for args in [
        vec!["check", "--config", config],
        vec![
            "run",
            "--config",
            config,
            "--input",
            input.to_str().unwrap(),
        ],
    ] {
        let out = ferrite(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("display.width/height = 60000 is out of range"),
            "{stderr}"
        );
        assert!(!png.exists(), "nothing was drawn");
    }
}

#[test]
fn a_file_size_limit_leaves_whole_lines_and_a_failed_exit() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let limit: libc::rlim_t = 3000;
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite"));
    command
        .args(["run", "--input"])
        .arg(astronaut())
        .args([
            "--loop",
            "--max-frames",
            "40",
            "--min-hits",
            "1",
            "--json-state",
        ])
        .arg("--json")
        .arg(&log);
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        command.pre_exec(move || {
            let rlim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writes to the outputs failed"), "{stderr}");
    assert!(
        stderr.contains("events.jsonl"),
        "the warning names the file: {stderr}"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.len() as u64 <= limit as u64);
    assert!(text.len() > 1000, "lines were written up to the limit");
    assert!(text.ends_with('\n'), "no half line at the end");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn classify_into_a_closed_pipe_is_not_a_start_up_failure() {
    let tree = tempfile::tempdir().unwrap();
    fs::create_dir(tree.path().join("happy")).unwrap();
    fs::copy(astronaut(), tree.path().join("happy/astronaut.png")).unwrap();
    for args in [
        vec!["classify".to_string(), astronaut().display().to_string()],
        vec!["eval".to_string(), tree.path().display().to_string()],
        vec![
            "eval".to_string(),
            "--json".to_string(),
            tree.path().display().to_string(),
        ],
    ] {
        // The reader is gone before the first line, as after `ferrite classify DIR | head -1`.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_closed_stdout_ends_the_run() {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--input"])
        .arg(astronaut())
        .args(["--loop", "--min-hits", "1", "--json-state"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `ferrite run | head -1` does.
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    drop(out);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferrite kept running after its stdout closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(first.contains("\"schema\":1"), "{first}");
}

#[cfg(feature = "display")]
#[test]
fn board_config_and_display_layer_into_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("ui.png");
    let config = dir.path().join("ferrite.toml");
    std::fs::write(
        &config,
        format!(
            "[tracker]\nmin_hits = 1\n[display]\ndriver = \"png\"\npath = {:?}\nwidth = 128\nheight = 64\n",
            png.display().to_string()
        ),
    )
    .unwrap();
    let input = astronaut();
    let out = ferrite(&[
        "run",
        "--board",
        "x86-desktop",
        "--config",
        config.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--loop",
        "--max-frames",
        "3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().next().unwrap_or("").contains("\"appeared\""),
        "min_hits 1 from the config: {stdout}"
    );
    let ui = image::open(&png).expect("the display was drawn");
    assert_eq!((ui.width(), ui.height()), (128, 64));

    std::fs::write(&config, "[tracker]\nmin_hits = \"one\"\n").unwrap();
    let bad = ferrite(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ferrite.toml:2:"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

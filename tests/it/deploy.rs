//! The service files in deploy/: the install script stages a complete tree, keeps a user's config,
//! refuses bad input, and the systemd unit passes `systemd-analyze verify` without warnings.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn install(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(args)
        .output()
        .expect("bash runs")
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .expect("installed file")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn staging_installs_binary_unit_rules_and_config_and_keeps_a_users_config() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_ferrite");
    let out = install(&["--binary", bin, "--root", r, "--board", "rpi5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/default/ferrite")).unwrap(),
        "FERRITE_BOARD=rpi5\n"
    );
    assert_eq!(mode(&root.path().join("usr/local/bin/ferrite")), 0o755);
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/ferrite.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    assert!(root
        .path()
        .join("etc/udev/rules.d/99-ferrite.rules")
        .exists());
    let cfg = root.path().join("etc/ferrite/ferrite.toml");
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        std::fs::read_to_string(repo().join("deploy/ferrite.toml")).unwrap()
    );
    // The shipped service config is valid on its own and over every board profile.
    let check = Command::new(bin)
        .args(["check", "--board", "x86-desktop", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_ne!(
        check.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    std::fs::write(&cfg, "# edited by the user\n").unwrap();
    let out = install(&["--binary", bin, "--root", r]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("keeping existing"));
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        "# edited by the user\n"
    );
}

#[test]
fn install_refuses_missing_or_bad_arguments_with_exit_2() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    for args in [
        vec!["--root", r],
        vec!["--binary", "/nonexistent/ferrite", "--root", r],
        vec![
            "--binary",
            env!("CARGO_BIN_EXE_ferrite"),
            "--config",
            "/nonexistent.toml",
            "--root",
            r,
        ],
        vec!["--frobnicate"],
        vec![
            "--binary",
            env!("CARGO_BIN_EXE_ferrite"),
            "--root",
            r,
            "--board",
            "rpi9",
        ],
    ] {
        let out = install(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} printed no reason");
    }
}

#[test]
fn systemd_unit_verifies_without_warnings() {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !crate::needs::available(
        "systemd-analyze",
        present,
        "systemd-analyze is not installed",
    ) {
        return;
    }
    // verify insists that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("deploy/ferrite.service"))
        .unwrap()
        .replace("/usr/local/bin/ferrite", env!("CARGO_BIN_EXE_ferrite"));
    let path = dir.path().join("ferrite.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

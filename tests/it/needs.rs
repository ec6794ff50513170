//! Tests that need something this machine may lack (a broker binary, a GPIO chip, a camera,
//! systemd) call [`available`] first. Where the thing is missing the test is skipped visibly
//! ("SKIPPED (needs ...)" on stderr), unless `FERRITE_REQUIRE_HW` names it: then the test fails,
//! so a CI that provides the thing cannot pass without using it.
//!
//! `FERRITE_REQUIRE_HW` is a comma-separated list of kinds (`mosquitto,openssl`), or `all`.
//! scripts/test.sh requires what it installs (mosquitto, openssl).

/// The kinds tests ask for; `FERRITE_REQUIRE_HW` names these.
pub const KINDS: [&str; 6] = [
    "mosquitto",
    "openssl",
    "gpiochip",
    "gpio-line",
    "v4l2",
    "systemd-analyze",
];

/// True when `kind` is `present`. When it is not: panics if `FERRITE_REQUIRE_HW` requires it,
/// else prints why the test is skipped and returns false (the caller returns).
pub fn available(kind: &str, present: bool, how: &str) -> bool {
    let list = std::env::var("FERRITE_REQUIRE_HW").unwrap_or_default();
    decide(kind, present, how, &list)
}

fn decide(kind: &str, present: bool, how: &str, required: &str) -> bool {
    assert!(
        KINDS.contains(&kind),
        "unknown kind {kind:?}; add it to KINDS"
    );
    if present {
        return true;
    }
    let is_required = required
        .split(',')
        .map(str::trim)
        .any(|k| k == kind || k == "all");
    assert!(
        !is_required,
        "FERRITE_REQUIRE_HW requires {kind}, and this machine lacks it: {how}"
    );
    eprintln!("SKIPPED (needs {kind}): {how}");
    false
}

#[test]
fn a_missing_kind_skips_unless_required() {
    assert!(decide("v4l2", true, "", "all"));
    assert!(!decide("v4l2", false, "absent on purpose", ""));
    assert!(!decide(
        "v4l2",
        false,
        "absent on purpose",
        "mosquitto, openssl"
    ));
    for list in ["v4l2", "mosquitto, v4l2", "all"] {
        let failed = std::panic::catch_unwind(|| decide("v4l2", false, "absent", list));
        assert!(failed.is_err(), "{list:?} requires v4l2");
    }
    let unknown = std::panic::catch_unwind(|| decide("no-such-kind", true, "", ""));
    assert!(unknown.is_err(), "unknown kinds are rejected");
}

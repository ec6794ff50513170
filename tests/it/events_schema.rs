//! The JSON lines the binary prints must match docs/events.schema.json, the documented contract
//! (docs/events.md). The lines come from the built binary on the bundled sample rather than from
//! the serialisers alone, so serde's flattening, renames and skipped fields are checked as a user
//! sees them. Every object in the schema is closed, so a key added to the output fails here until
//! the schema and the docs describe it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::imageops;
use jsonschema::Validator;
use serde_json::Value;

/// The line kinds of the schema's top-level `oneOf`, each a `$defs` entry. The tests below
/// must produce every one of them from real output.
const KINDS: &[&str] = &[
    "classify_face",
    "classify_error",
    "appeared",
    "expression_changed",
    "left",
    "state",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn astronaut() -> PathBuf {
    root().join("assets/astronaut.png")
}

fn schema() -> Value {
    let path = root().join("docs/events.schema.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The whole schema, as a reader of the docs would use it.
fn whole() -> Validator {
    jsonschema::draft202012::new(&schema()).expect("docs/events.schema.json compiles")
}

/// The schema with its `oneOf` narrowed to one kind. A line that fails `oneOf` only says that no
/// branch matched; checking the branch the line claims to be names the key that is wrong.
fn kind(name: &str) -> Validator {
    let mut schema = schema();
    let top = schema.as_object_mut().unwrap();
    top.remove("oneOf");
    top.insert("$ref".into(), Value::String(format!("#/$defs/{name}")));
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("$defs/{name}: {e}"))
}

/// The kind a line says it is: run lines carry `type`, classify lines `error` or not.
fn kind_of(line: &Value) -> &str {
    match line.get("type").and_then(Value::as_str) {
        Some(t) => t,
        None if line.get("error").is_some() => "classify_error",
        None => "classify_face",
    }
}

/// Checks every line against the whole schema and against the kind it claims; returns the kinds
/// seen, in order.
fn check(stdout: &[u8]) -> Vec<String> {
    let whole = whole();
    let text = String::from_utf8(stdout.to_vec()).expect("stdout is UTF-8");
    assert!(!text.is_empty(), "no JSON lines at all");
    let mut kinds = Vec::new();
    for line in text.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let name = kind_of(&value).to_string();
        assert!(
            KINDS.contains(&name.as_str()),
            "unknown kind {name}: {line}"
        );
        let errors: Vec<String> = kind(&name)
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} line breaks the schema: {errors:#?}\n{line}"
        );
        assert!(
            whole.is_valid(&value),
            "not exactly one oneOf branch: {line}"
        );
        kinds.push(name);
    }
    kinds
}

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_schema_is_valid_draft_2020_12_and_lists_every_kind() {
    let schema = schema();
    assert!(
        jsonschema::draft202012::meta::is_valid(&schema),
        "docs/events.schema.json is not a valid draft 2020-12 schema"
    );
    let listed: Vec<&str> = schema["oneOf"]
        .as_array()
        .expect("a top-level oneOf")
        .iter()
        .map(|r| r["$ref"].as_str().unwrap().trim_start_matches("#/$defs/"))
        .collect();
    assert_eq!(
        listed, KINDS,
        "the test must cover every kind the schema lists"
    );
}

#[test]
fn classify_lines_match_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("not-an-image.png");
    fs::write(&fake, b"this is text, not a PNG").unwrap();

    // Detection on, with landmarks, and an input that fails: face lines and an error line.
    let out = ferrite(&["classify", "--landmarks", s(&astronaut()), s(&fake)]);
    assert_eq!(out.status.code(), Some(1), "one input fails");
    let kinds = check(&out.stdout);
    assert_eq!(kinds, ["classify_face", "classify_error"]);

    // --no-detect: `score` is null.
    let out = ferrite(&["classify", "--no-detect", s(&astronaut())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(check(&out.stdout), ["classify_face"]);
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["score"].is_null(), "{line}");
}

#[test]
fn run_lines_match_the_schema() {
    // A looped still: the face appears, is tracked (one state line per frame) and leaves.
    let out = ferrite(&[
        "run",
        "--input",
        s(&astronaut()),
        "--loop",
        "--max-frames",
        "4",
        "--min-hits",
        "2",
        "--json-state",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds = check(&out.stdout);
    for want in ["appeared", "state", "left"] {
        assert!(kinds.iter().any(|k| k == want), "no {want} line: {kinds:?}");
    }

    // A change of expression: the astronaut's face, then the same frame size in flat gray.
    // --no-detect makes each frame one face, so both are one track; no smoothing and no
    // hysteresis make the label switch on the first gray frame.
    let dir = tempfile::tempdir().unwrap();
    let photo = image::open(astronaut()).unwrap().to_luma8();
    let face = imageops::crop_imm(&photo, 143, 45, 165, 165).to_image();
    let gray = image::GrayImage::from_pixel(165, 165, image::Luma([128]));
    for i in 0..6 {
        let frame = if i < 3 { &face } else { &gray };
        frame.save(dir.path().join(format!("{i:02}.png"))).unwrap();
    }
    let out = ferrite(&[
        "run",
        "--input",
        s(dir.path()),
        "--no-detect",
        "--detect-every",
        "1",
        "--min-hits",
        "1",
        "--smoothing",
        "1",
        "--switch-margin",
        "0",
        "--switch-frames",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds = check(&out.stdout);
    assert_eq!(kinds, ["appeared", "expression_changed", "left"]);
}

/// The schema must reject what the binary must not print; otherwise the tests above prove
/// nothing.
#[test]
fn the_schema_rejects_wrong_lines() {
    let whole = whole();
    let out = ferrite(&["classify", s(&astronaut())]);
    let good: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(whole.is_valid(&good), "{good}");

    let mut extra = good.clone();
    extra["extra"] = Value::from(1);
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("label");
    let mut short_box = good.clone();
    short_box["box"].as_array_mut().unwrap().pop();
    let mut too_sure = good.clone();
    too_sure["confidence"] = Value::from(1.5);
    let unknown_type: Value = serde_json::from_str(
        r#"{"schema":1,"type":"vanished","time":0.0,"frame":0,"track":1,"box":[0,0,1,1],
            "label":"happy","confidence":0.9,"probabilities":{"happy":0.9}}"#,
    )
    .unwrap();
    for (what, bad) in [
        ("an unknown key", extra),
        ("no label", missing),
        ("a 3-number box", short_box),
        ("confidence above 1", too_sure),
        ("an unknown event type", unknown_type),
    ] {
        assert!(!whole.is_valid(&bad), "accepted {what}: {bad}");
    }
}

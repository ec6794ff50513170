use super::*;
use crate::classify::Scores;
use crate::track::Stamp;

const LABELS: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

fn face(track: TrackId, label: &str, p: f32) -> TrackState {
    let rest = (1.0 - p) / 6.0;
    TrackState {
        track,
        bbox: [64.0, 48.0, 128.0, 96.0],
        label: label.into(),
        confidence: p,
        probabilities: Scores(
            LABELS
                .iter()
                .map(|&l| (l.to_string(), if l == label { p } else { rest }))
                .collect(),
        ),
        first_seen: Duration::ZERO,
        misses: 0,
        score: 0.93,
        parts: Vec::new(),
    }
}

fn update(ms: u64, tracks: Vec<TrackState>) -> FrameUpdate {
    FrameUpdate {
        stamp: Stamp {
            frame: ms / 33,
            timestamp: Duration::from_millis(ms),
        },
        detected: true,
        frame_size: [640, 480],
        tracks,
    }
}

fn config() -> Ros2Config {
    Ros2Config {
        enabled: true,
        domain_id: Some(7),
        tracked_interval_ms: 500,
        ..Ros2Config::default()
    }
}

#[test]
fn the_tracked_list_goes_out_on_change_and_when_due() {
    let mut planner = Planner::new(&config());
    let ids = |plan: &FramePlan| plan.tracked.as_ref().map(|l| l.ids.clone());
    // The first frame always publishes, even with no faces: a late subscriber learns "none".
    assert_eq!(ids(&planner.plan(&update(0, vec![]))), Some(vec![]));
    assert_eq!(ids(&planner.plan(&update(100, vec![]))), None);
    let one = vec![face(3, "happy", 0.9)];
    assert_eq!(
        ids(&planner.plan(&update(133, one.clone()))),
        Some(vec!["f00003".to_string()])
    );
    assert_eq!(ids(&planner.plan(&update(166, one.clone()))), None);
    assert_eq!(ids(&planner.plan(&update(632, one.clone()))), None);
    // 500 ms after the last list, the same list again.
    assert_eq!(
        ids(&planner.plan(&update(633, one.clone()))),
        Some(vec!["f00003".to_string()])
    );
    let two = vec![face(3, "happy", 0.9), face(12, "sad", 0.6)];
    assert_eq!(
        ids(&planner.plan(&update(666, two))),
        Some(vec!["f00003".to_string(), "f00012".to_string()])
    );
    assert_eq!(ids(&planner.plan(&update(700, vec![]))), Some(vec![]));
    // A stream that starts over (a looping recording) is due at once.
    assert_eq!(ids(&planner.plan(&update(10, vec![]))), Some(vec![]));
}

#[test]
fn each_face_gets_its_expression_and_normalised_box_with_one_stamp() {
    let mut planner = Planner::new(&config());
    let first = planner.plan(&update(0, vec![]));
    let plan = planner.plan(&update(1500, vec![face(3, "fear", 0.7)]));
    assert_eq!(plan.faces.len(), 1);
    let f = &plan.faces[0];
    assert_eq!(f.track, 3);
    assert_eq!(f.expression.expression, "scared");
    assert!((f.expression.confidence - 0.7).abs() < 1e-6);
    assert_eq!(f.expression.header.frame_id, "camera");
    assert_eq!(f.expression.header, f.roi.header);
    assert_eq!(
        (f.roi.xmin, f.roi.ymin, f.roi.xmax, f.roi.ymax),
        (0.1, 0.1, 0.3, 0.3)
    );
    assert!((f.roi.c - 0.93).abs() < 1e-6);
    // Stamps keep the stream's spacing: 1.5 s after the first frame's.
    let t0 = first.tracked.unwrap().header.stamp;
    let t1 = f.expression.header.stamp;
    let ns = |t: Time| i64::from(t.sec) * 1_000_000_000 + i64::from(t.nanosec);
    assert_eq!(ns(t1) - ns(t0), 1_500_000_000);
    // And sit on the wall clock, not at the epoch.
    assert!(t0.sec > 1_700_000_000, "{t0:?}");
}

#[test]
fn a_box_past_the_frame_edge_is_clipped() {
    let mut planner = Planner::new(&config());
    let mut edge = face(1, "happy", 0.8);
    edge.bbox = [-20.0, 400.0, 100.0, 120.0];
    let roi = &planner.plan(&update(0, vec![edge])).faces[0].roi;
    assert_eq!((roi.xmin, roi.ymax), (0.0, 1.0));
    assert!((roi.xmax - 80.0 / 640.0).abs() < 1e-6);
}

#[test]
fn labels_map_to_rep155_names_and_the_circumplex() {
    let names: Vec<&str> = LABELS.iter().map(|l| rep155_expression(l).0).collect();
    assert_eq!(
        names,
        [
            "angry",
            "disgusted",
            "scared",
            "happy",
            "sad",
            "surprised",
            "neutral"
        ]
    );
    assert_eq!(rep155_expression("contempt"), ("contempt", 0.0, 0.0));
    // Certain happiness sits at happy's coordinates; a certain neutral face at the origin.
    let (v, a) = valence_arousal(&face(1, "happy", 1.0));
    assert!((v - 0.81).abs() < 1e-6 && (a - 0.61).abs() < 1e-6);
    let (v, a) = valence_arousal(&face(1, "neutral", 1.0));
    assert!(v.abs() < 1e-6 && a.abs() < 1e-6);
    // Happy against sad at 50/50: between them.
    let mut mixed = face(1, "happy", 0.5);
    for (label, p) in &mut mixed.probabilities.0 {
        *p = match label.as_str() {
            "happy" | "sad" => 0.5,
            _ => 0.0,
        };
    }
    let (v, a) = valence_arousal(&mixed);
    assert!((v - (0.81 - 0.63) / 2.0).abs() < 1e-6);
    assert!((a - (0.61 - 0.27) / 2.0).abs() < 1e-6);
}

#[test]
fn face_ids_are_valid_ros_names() {
    assert_eq!(face_id(3), "f00003");
    assert_eq!(face_id(1_234_567), "f1234567");
    assert!(is_ros_token(&face_id(0)));
}

#[test]
fn config_is_checked_and_parses_from_toml() {
    assert!(config().validate().is_ok());
    let bad = [
        Ros2Config {
            domain_id: Some(233),
            ..config()
        },
        Ros2Config {
            node_name: "9lives".into(),
            ..config()
        },
        Ros2Config {
            node_name: "a__b".into(),
            ..config()
        },
        Ros2Config {
            namespace: "robot".into(),
            ..config()
        },
        Ros2Config {
            namespace: "/robot/".into(),
            ..config()
        },
        Ros2Config {
            frame_id: String::new(),
            ..config()
        },
        Ros2Config {
            tracked_interval_ms: 0,
            ..config()
        },
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
    }
    assert!(Ros2Config {
        namespace: "/robot1/head".into(),
        ..config()
    }
    .validate()
    .is_ok());
    let parsed: Ros2Config =
        toml::from_str("enabled = true\ndomain_id = 42\nframe_id = \"head_camera\"\n").unwrap();
    assert_eq!(parsed.domain().unwrap(), 42);
    assert_eq!(parsed.frame_id, "head_camera");
    assert_eq!(parsed.node_name, "ferrite");
    assert!(toml::from_str::<Ros2Config>("domain = 1\n").is_err());
}

//! The boundary encodings: exit reasons and outcomes round-trip, and malformed bytes decode
//! to a described value (or `None`), never a panic.

use hotswap::{ExitReason, Outcome};

fn reasons() -> Vec<ExitReason> {
    vec![
        ExitReason::Normal,
        ExitReason::Kill,
        ExitReason::Killed,
        ExitReason::Shutdown,
        ExitReason::ShutdownWith("maintenance".into()),
        ExitReason::Panic("index out of bounds (at src/lib.rs:3:5)".into()),
        ExitReason::NoProc,
        ExitReason::BadArg("argument cannot decode".into()),
        ExitReason::User("überlastet".into()),
    ]
}

#[test]
fn exit_reasons_round_trip_and_print_like_erlang() {
    for r in reasons() {
        assert_eq!(ExitReason::decode(&r.encode()), r);
    }
    assert_eq!(ExitReason::Killed.to_string(), "killed");
    assert_eq!(
        ExitReason::Panic("boom".into()).to_string(),
        "{panic, \"boom\"}"
    );
    assert!(ExitReason::ShutdownWith("x".into()).is_normalish());
    assert!(!ExitReason::Killed.is_normalish());
}

#[test]
fn malformed_exit_reasons_are_described_not_panicked_on() {
    assert_eq!(
        ExitReason::decode(&[]),
        ExitReason::User("<empty exit reason>".into())
    );
    assert_eq!(
        ExitReason::decode(&[200]),
        ExitReason::User("<unknown exit reason tag 200>".into())
    );
    assert_eq!(
        ExitReason::decode(&[5, 0xff, 0xfe]),
        ExitReason::Panic("\u{fffd}\u{fffd}".into())
    );
}

#[test]
fn outcomes_round_trip() {
    let cases = vec![
        Outcome::Value(vec![]),
        Outcome::value(&(1u8, "two")),
        Outcome::Exit(ExitReason::User("done".into())),
        Outcome::Continue {
            module: "m".into(),
            function: "loop".into(),
            arg: vec![1, 2, 3],
        },
        Outcome::Continue {
            module: String::new(),
            function: String::new(),
            arg: vec![],
        },
    ];
    for o in cases {
        assert_eq!(Outcome::decode(&o.encode()), Some(o));
    }
}

#[test]
fn malformed_outcomes_decode_to_none() {
    assert_eq!(Outcome::decode(&[]), None);
    assert_eq!(Outcome::decode(&[9]), None);
    // A continue whose module length runs past the end.
    assert_eq!(Outcome::decode(&[2, 255, 0, 0, 0, b'm']), None);
    // A continue cut inside the function name's length.
    assert_eq!(Outcome::decode(&[2, 1, 0, 0, 0, b'm', 1, 0]), None);
    // Not UTF-8.
    assert_eq!(Outcome::decode(&[2, 1, 0, 0, 0, 0xff, 0, 0, 0, 0]), None);
}

#[test]
fn codec_names_the_expected_type_on_failure() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Point {
        x: i32,
    }
    let err = hotswap::codec::decode::<Point>(&hotswap::codec::encode("not a point")).unwrap_err();
    assert!(err.to_string().contains("Point"), "{err}");
    // Named fields: an added optional field still decodes in the old reader.
    #[derive(serde::Serialize)]
    struct PointV2 {
        x: i32,
        label: Option<String>,
    }
    let bytes = hotswap::codec::encode(&PointV2 {
        x: 7,
        label: Some("new".into()),
    });
    assert_eq!(hotswap::codec::decode::<Point>(&bytes).unwrap().x, 7);
}

#[test]
fn describe_renders_messages_for_error_reasons() {
    #[derive(serde::Serialize)]
    enum Tick {
        Increment,
        By(u64),
    }
    assert_eq!(
        hotswap::codec::describe(&hotswap::codec::encode(&Tick::Increment)),
        "Increment"
    );
    assert_eq!(
        hotswap::codec::describe(&hotswap::codec::encode(&Tick::By(2))),
        "{By: 2}"
    );
    assert!(hotswap::codec::describe(&[0xc1]).contains("not MessagePack"));
}

#[test]
fn decode_compat_prefers_new_form_and_names_both_on_failure() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum New {
        Increment(u64),
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    enum Old {
        Increment,
    }
    impl From<Old> for New {
        fn from(_: Old) -> New {
            New::Increment(2)
        }
    }
    let new = hotswap::codec::encode(&New::Increment(5));
    assert_eq!(
        hotswap::codec::decode_compat::<New, Old>(&new).unwrap(),
        New::Increment(5)
    );
    let old = hotswap::codec::encode(&Old::Increment);
    assert_eq!(
        hotswap::codec::decode_compat::<New, Old>(&old).unwrap(),
        New::Increment(2)
    );
    let err = hotswap::codec::decode_compat::<New, Old>(&hotswap::codec::encode(&7u8)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("New") && text.contains("Old"), "{text}");
}

#[test]
fn server_refs_parse_as_pids_print() {
    use hotswap::gen_server::ServerRef;
    use hotswap::Pid;
    let p = Pid(12);
    for s in [
        p.to_string().as_str(),
        "<0.12>",
        "0.12.0",
        "0.12",
        "12",
        " 12 ",
    ] {
        assert_eq!(s.parse::<ServerRef>().unwrap(), ServerRef::Pid(p), "{s}");
    }
    for s in ["counter", "0.x", "<counter>", "<0.12.1>", "1.12", "0", "<>"] {
        assert!(
            matches!(s.parse::<ServerRef>().unwrap(), ServerRef::Name(_)),
            "{s}"
        );
    }
}

#[test]
fn with_encoded_matches_encode_small_and_large() {
    let small = (1u8, "two");
    let large = vec![7u64; 500];
    assert_eq!(
        hotswap::codec::with_encoded(&small, |b| b.to_vec()),
        hotswap::codec::encode(&small)
    );
    assert_eq!(
        hotswap::codec::with_encoded(&large, |b| b.to_vec()),
        hotswap::codec::encode(&large)
    );
}

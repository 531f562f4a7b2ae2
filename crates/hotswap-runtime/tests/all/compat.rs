//! The compatibility rules (README, "Types on the boundary"): one test per row of the rules
//! table. Each row is verified twice: with `rmp-serde` (encode samples with one type,
//! decode with the other, both ways) and with the checker (`compat::reads` over the two
//! traced descriptions); both must give the row's answer, so the table is true.

use std::collections::BTreeMap;

use hotswap::schema::{describe, Accepts, Format, ModuleSchema, ServerSchema, TypeDesc};
use hotswap_runtime::compat::{self, Level, Reads, Verdict};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Does every sample written as `W` decode as `R` with rmp-serde?
fn decodes<W: Serialize, R: DeserializeOwned>(samples: &[W]) -> bool {
    samples.iter().all(|s| {
        let b = rmp_serde::to_vec_named(s).unwrap();
        rmp_serde::from_slice::<R>(&b).is_ok()
    })
}

fn checker<W: DeserializeOwned, R: DeserializeOwned>() -> Reads {
    compat::reads(&describe::<W>().format, &describe::<R>().format, "")
}

/// One row: old type `A` with samples, new type `B` with samples; whether the new type
/// reads the old data (upgrade) and the old type the new data (downgrade).
fn row<A, B>(old: &[A], new: &[B], upgrade: bool, downgrade: bool)
where
    A: Serialize + DeserializeOwned,
    B: Serialize + DeserializeOwned,
{
    let (a, b) = (std::any::type_name::<A>(), std::any::type_name::<B>());
    assert_eq!(decodes::<A, B>(old), upgrade, "rmp-serde: {b} reading {a}");
    assert_eq!(
        decodes::<B, A>(new),
        downgrade,
        "rmp-serde: {a} reading {b}"
    );
    let up = checker::<A, B>();
    assert_eq!(
        up == Reads::Yes,
        upgrade,
        "checker: {b} reading {a}: {up:?}"
    );
    assert!(matches!(up, Reads::Yes | Reads::No(_)), "{up:?}");
    let down = checker::<B, A>();
    assert_eq!(
        down == Reads::Yes,
        downgrade,
        "checker: {a} reading {b}: {down:?}"
    );
    assert!(matches!(down, Reads::Yes | Reads::No(_)), "{down:?}");
}

mod v1 {
    use super::*;
    #[derive(Serialize, Deserialize, Debug)]
    pub struct S {
        pub a: u32,
        pub b: String,
    }
}

#[test]
fn compat_added_optional_field_accepted() {
    mod v2 {
        use super::*;
        #[derive(Serialize, Deserialize, Debug)]
        pub struct S {
            pub a: u32,
            pub b: String,
            #[serde(default)]
            pub c: u64,
        }
        #[derive(Serialize, Deserialize, Debug)]
        pub struct T {
            pub a: u32,
            pub b: String,
            pub c: Option<u64>,
        }
    }
    let old = [v1::S {
        a: 1,
        b: "x".into(),
    }];
    row(
        &old,
        &[v2::S {
            a: 1,
            b: "x".into(),
            c: 7,
        }],
        true,
        true,
    );
    row(
        &old,
        &[v2::T {
            a: 1,
            b: "x".into(),
            c: Some(7),
        }],
        true,
        true,
    );
}

#[test]
fn rule_field_added_required_refused() {
    #[derive(Serialize, Deserialize, Debug)]
    struct S {
        a: u32,
        b: String,
        c: u64,
    }
    let old = [v1::S {
        a: 1,
        b: "x".into(),
    }];
    row(
        &old,
        &[S {
            a: 1,
            b: "x".into(),
            c: 7,
        }],
        false,
        true,
    );
    let Reads::No(why) = checker::<v1::S, S>() else {
        panic!()
    };
    assert!(
        why[0].contains("field `c` is required but never written"),
        "{why:?}"
    );
}

#[test]
fn compat_removed_field_accepted() {
    #[derive(Serialize, Deserialize, Debug)]
    struct S {
        a: u32,
    }
    // The new version ignores the old field; the old one needs it back (downgrade).
    row(
        &[v1::S {
            a: 1,
            b: "x".into(),
        }],
        &[S { a: 1 }],
        true,
        false,
    );
}

#[test]
fn compat_renamed_field_refused_without_alias() {
    #[derive(Serialize, Deserialize, Debug)]
    struct S {
        a: u32,
        name: String,
    }
    row(
        &[v1::S {
            a: 1,
            b: "x".into(),
        }],
        &[S {
            a: 1,
            name: "x".into(),
        }],
        false,
        false,
    );
    let Reads::No(why) = checker::<v1::S, S>() else {
        panic!()
    };
    assert!(
        why[0].contains("field `name` is required") && why[0].contains("#[serde(alias = \"b\")]"),
        "the fix names the alias: {why:?}"
    );
}

#[test]
fn rule_field_renamed_with_alias_accepted() {
    #[derive(Serialize, Deserialize, Debug)]
    struct S {
        a: u32,
        #[serde(alias = "b")]
        name: String,
    }
    // The new version reads the old name; the old one cannot read the new name.
    row(
        &[v1::S {
            a: 1,
            b: "x".into(),
        }],
        &[S {
            a: 1,
            name: "x".into(),
        }],
        true,
        false,
    );
}

#[test]
fn rule_type_widened_accepted() {
    row(&[7u32, u32::MAX], &[u64::MAX], true, false);
    row(&[7u32], &[-1i64], true, false);
    // f32 → f64 reads; the way back decodes but loses the value, so the checker refuses it.
    assert!(decodes::<f32, f64>(&[1.5f32]));
    assert_eq!(checker::<f32, f64>(), Reads::Yes);
    let b = rmp_serde::to_vec_named(&1.0e300f64).unwrap();
    assert_ne!(rmp_serde::from_slice::<f32>(&b).unwrap() as f64, 1.0e300);
    assert!(matches!(checker::<f64, f32>(), Reads::No(_)));
}

#[test]
fn compat_type_narrowed_refused() {
    row(&[u64::MAX], &[7u32], false, true);
    row(&[-1i32], &[u64::MAX], false, false);
    let Reads::No(why) = checker::<u64, u32>() else {
        panic!()
    };
    assert!(why[0].contains("narrowed"), "{why:?}");
}

mod msg {
    use super::*;
    #[derive(Serialize, Deserialize, Debug)]
    pub enum V1 {
        Get,
        Add(u64),
    }
    #[derive(Serialize, Deserialize, Debug)]
    pub enum V2 {
        Get,
        Add(u64),
        Reset { to: u64 },
    }
    #[derive(Serialize, Deserialize, Debug)]
    pub enum V3 {
        Get,
    }
}

#[test]
fn rule_enum_variant_added_reads_old_not_new() {
    row(
        &[msg::V1::Get, msg::V1::Add(2)],
        &[msg::V2::Reset { to: 0 }],
        true,
        false,
    );
}

#[test]
fn rule_enum_variant_removed_refused() {
    row(
        &[msg::V1::Get, msg::V1::Add(2)],
        &[msg::V3::Get],
        false,
        true,
    );
}

#[test]
fn rule_struct_to_map_and_back() {
    #[derive(Serialize, Deserialize, Debug)]
    struct AllDefault {
        #[serde(default)]
        a: u32,
        #[serde(default)]
        c: u32,
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct Named {
        a: String,
        b: String,
    }
    let old = [Named {
        a: "1".into(),
        b: "2".into(),
    }];
    let map = BTreeMap::from([("a".to_string(), "1".to_string())]);
    // A struct reads as a map of its fields; a map may lack the struct's required fields.
    row(&old, &[map], true, false);
    row(
        &[BTreeMap::from([("a".to_string(), 1u32)])],
        &[AllDefault { a: 1, c: 2 }],
        true,
        true,
    );
}

#[test]
fn rule_newtype_wrapped_and_unwrapped_accepted() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Meters(u32);
    #[derive(Serialize, Deserialize, Debug)]
    struct Label(String);
    row(&[5u32], &[Meters(5)], true, true);
    // A newtype whose content changes is the content's change.
    row(&[Meters(5)], &[Label("5".into())], false, false);
}

#[test]
fn rule_unit_variant_to_newtype_variant_refused() {
    // Seed 002: `:increment` became `{:increment, value}`.
    #[derive(Serialize, Deserialize, Debug)]
    enum OldTick {
        Increment,
    }
    #[derive(Serialize, Deserialize, Debug)]
    enum NewTick {
        Increment(u64),
    }
    #[derive(Serialize, Deserialize, Debug)]
    enum PairTick {
        Increment(u64, u64),
    }
    row(
        &[OldTick::Increment],
        &[NewTick::Increment(2)],
        false,
        false,
    );
    row(
        &[OldTick::Increment],
        &[PairTick::Increment(1, 2)],
        false,
        false,
    );
    let Reads::No(why) = checker::<OldTick, NewTick>() else {
        panic!()
    };
    assert!(why[0].contains("unit variant"), "{why:?}");
}

#[test]
fn rule_value_made_optional_reads_old_only() {
    row(&[5u32], &[None::<u32>], true, false);
}

#[test]
fn rule_deny_unknown_fields_refuses_added_fields() {
    #[derive(Serialize, Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        a: u32,
        b: String,
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct More {
        a: u32,
        b: String,
        #[serde(default)]
        c: u8,
    }
    row(
        &[Strict {
            a: 1,
            b: "x".into(),
        }],
        &[More {
            a: 1,
            b: "x".into(),
            c: 1,
        }],
        true,
        false,
    );
}

fn server(state: TypeDesc, info: TypeDesc, accepts: Accepts) -> ModuleSchema {
    ModuleSchema {
        module: "m".into(),
        version: "x".into(),
        server: Some(ServerSchema {
            state,
            call: describe::<()>(),
            reply: describe::<u64>(),
            cast: describe::<()>(),
            info,
            accepts,
        }),
        exports: Vec::new(),
    }
}

#[test]
fn compat_enum_variant_removed_refused_for_messages() {
    let old = server(describe::<u64>(), describe::<msg::V1>(), Accepts::new());
    let new = server(describe::<u64>(), describe::<msg::V3>(), Accepts::new());
    let r = compat::check(&old, &new);
    assert_eq!(r.verdict(), Verdict::Incompatible, "{}", r.to_text());
    let f = &r.incompatible[0];
    assert_eq!(
        (f.callback.as_str(), f.level),
        ("handle_info", Level::Upgrade)
    );
    assert!(f.problems[0].contains("variant `Add`"), "{f}");
    // Declaring the old form as accepted (with a decode_info override) passes.
    let new = server(
        describe::<u64>(),
        describe::<msg::V3>(),
        Accepts::new().info::<msg::V1>(),
    );
    assert_eq!(compat::check(&old, &new).verdict(), Verdict::Compatible);
}

#[test]
fn compat_downgrade_checked_in_reverse() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Smaller {
        a: u32,
    }
    let v1s = server(describe::<v1::S>(), describe::<()>(), Accepts::new());
    let v2s = server(describe::<Smaller>(), describe::<()>(), Accepts::new());
    // v1 → v2 drops a field: the upgrade reads; the downgrade is reported.
    let up = compat::check(&v1s, &v2s);
    assert_eq!(up.verdict(), Verdict::Compatible, "{}", up.to_text());
    let w = up
        .warnings
        .iter()
        .find(|w| w.callback == "code_change")
        .expect("reported");
    assert_eq!(w.level, Level::Downgrade);
    // Loading v1 again over v2 is the reverse check, and it refuses.
    let down = compat::check_downgrade(&v1s, &v2s);
    assert_eq!(down.verdict(), Verdict::Incompatible, "{}", down.to_text());
    assert_eq!(
        (
            down.old_version.as_str(),
            down.incompatible[0].callback.as_str()
        ),
        ("x", "code_change")
    );
    assert!(down.incompatible[0].problems[0].contains("field `b` is required"));
}

#[test]
fn compat_uncovered_type_reported_not_checked() {
    #[derive(Serialize, Deserialize, Debug)]
    #[serde(untagged)]
    enum Loose {
        N(u64),
        S(String),
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct State {
        n: u64,
        extra: Loose,
    }
    let d = describe::<State>();
    let Format::Unknown(why) = &d.format else {
        panic!("{}", d.render())
    };
    assert!(
        why.contains("deserialize_any") && why.contains(".extra"),
        "{why}"
    );
    let old = server(describe::<State>(), describe::<()>(), Accepts::new());
    let new = server(describe::<State>(), describe::<()>(), Accepts::new());
    // Even identical types: not described means not checked, never "compatible".
    let r = compat::check(&old, &new);
    assert_eq!(r.verdict(), Verdict::NotChecked, "{}", r.to_text());
    assert!(!r.refuses());
    let u = r
        .unchecked
        .iter()
        .find(|u| u.callback == "code_change")
        .unwrap();
    assert!(u.reason.contains("deserialize_any"), "{}", u.reason);
    assert!(r.to_text().contains("not checked (upgrade): code_change"));
}

/// What the static rules cannot see, the dry run catches: v2 validates its state in a
/// custom `Deserialize`; the description is the same as v1's, but one of the two live
/// states is above v2's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_dry_run_catches_custom_deserialize() {
    use crate::support::{self, module};
    use hotswap_runtime::StartOpts;
    let node = support::node();
    node.code().load(module("dry_run_v1")).await.unwrap();
    let small = node
        .start_server("dry_run", &7u64, StartOpts::default())
        .await
        .unwrap();
    let big = node
        .start_server("dry_run", &1000u64, StartOpts::default())
        .await
        .unwrap();
    let c = node.code().check(module("dry_run_v2")).await.unwrap();
    let r = c.report.as_ref().expect("both describe themselves");
    assert_eq!(r.verdict(), Verdict::Compatible, "{}", r.to_text());
    assert!(c.refuses(), "{c:?}");
    let by_pid = |p| {
        c.dry_run
            .iter()
            .find(|d| d.pid == p)
            .expect("each live server")
    };
    assert_eq!(by_pid(small).error, None);
    let e = by_pid(big).error.as_deref().expect("the big state fails");
    assert!(e.contains("above this version's limit 100"), "{e}");
    // Nothing changed: v1 is still current, both servers alive.
    assert_eq!(
        node.code()
            .module("dry_run")
            .unwrap()
            .current
            .unwrap()
            .version,
        "1"
    );
    assert!(node.is_alive(small) && node.is_alive(big));
}

mod place_v1 {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub struct Item {
        pub qty: u64,
    }
    #[derive(Serialize, Deserialize)]
    pub enum Msg {
        Order {
            items: Vec<Item>,
            tags: BTreeMap<String, (u8, u64)>,
        },
        Pair(u32, u64),
    }
}

mod place_v2 {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub struct Item {
        pub qty: u32,
    }
    #[derive(Serialize, Deserialize)]
    pub enum Msg {
        Order {
            items: Vec<Item>,
            tags: BTreeMap<String, (u8, u32)>,
        },
        Pair(u32, u16),
    }
}

/// Each reason names where in the type it applies: fields, sequence elements, map values,
/// tuple positions and variants, after the caller's prefix.
#[test]
fn compat_reasons_name_the_place() {
    let (w, r) = (
        describe::<place_v1::Msg>().format,
        describe::<place_v2::Msg>().format,
    );
    let Reads::No(why) = compat::reads(&w, &r, "state") else {
        panic!("narrowed integers are refused");
    };
    let places: Vec<&str> = why
        .iter()
        .map(|w| w.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        places,
        [
            "at state::Order.items[].qty",
            "at state::Order.tags{value}.1",
            "at state::Pair.1",
        ],
        "{why:?}"
    );
    assert!(why[0].contains("written as u64, read as u32"), "{why:?}");
    // Without a prefix, a reason at the top names no place.
    let Reads::No(top) = compat::reads(&Format::U64, &Format::U8, "") else {
        panic!("u64 is not read as u8");
    };
    assert!(top[0].starts_with("written as u64, read as u8"), "{top:?}");
}

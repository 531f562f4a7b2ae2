//! Any MessagePack value, rendered for scripts (JSON) and for people (text): what
//! `hotswap get-state` shows of a gen_server's state.
//!
//! A state is whatever its module's serde types encode to (MessagePack with named fields),
//! so it can hold things JSON has no word for: maps keyed by integers, tuples or enums,
//! binaries, extension types, NaN. Every value renders; nothing is refused for its shape.
//!
//! **JSON** ([`to_json`]):
//!
//! | MessagePack | JSON |
//! |---|---|
//! | nil, boolean, integer, string | `null`, `true`/`false`, number, string |
//! | float | number; NaN and the infinities as the strings `"NaN"`, `"inf"`, `"-inf"` |
//! | array | array |
//! | map | object; a string key is itself, any other key the compact JSON text of its rendering (`0` → `"0"`, `(1, "a")` → `"[1,\"a\"]"`, `Some(2)`-like variant `{"A": 2}` → `"{\"A\":2}"`) |
//! | map whose rendered keys collide (`1` and `"1"`), or whose only key is one of the labels below | `{"$map": [[key, value], ...]}`, each key rendered as a value (not as text) |
//! | binary | `{"$binary": "<lowercase hex>"}` |
//! | string that is not UTF-8 | `{"$invalid_utf8": "<hex>"}` |
//! | extension type −1 (timestamp) | `{"$timestamp": {"seconds": s, "nanoseconds": n}}` |
//! | other extension types | `{"$ext": {"type": t, "data": "<hex>"}}` |
//! | anything nested deeper than [`MAX_JSON_DEPTH`] levels | `{"$deep": "<its text rendering, on one line>"}` (JSON readers commonly stop at 128 levels) |
//!
//! **Text** ([`to_text`]): JSON-like, in the order the state holds its entries, indented by
//! two spaces, with short arrays and maps on one line. Keys are shown as they are: `0: 5`,
//! `"name": "x"`, `[1, "a"]: true`, `{"A": 2}: 7`. Binaries show as
//! `<binary 3 bytes: 0a1bff>`, other strings that are not UTF-8 as `<invalid UTF-8: ...>`,
//! extension types as `<ext 5, 2 bytes: 0102>` and timestamps as `<timestamp 12.5 s>`;
//! floats as Rust prints them (`1.0`, `NaN`, `inf`).

use std::fmt::Write as _;

use rmpv::Value;
use serde_json::{json, Map, Number, Value as Json};

/// How deep JSON renderings nest before the rest is given as text.
pub const MAX_JSON_DEPTH: usize = 100;

/// The labels of the JSON forms that are not plain JSON.
const LABELS: &[&str] = &[
    "$map",
    "$binary",
    "$invalid_utf8",
    "$timestamp",
    "$ext",
    "$deep",
];

/// How wide a one-line array or map may be in the text rendering.
const LINE: usize = 72;

/// Decode exactly one MessagePack value from `bytes` (bytes left over are an error).
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut rd = bytes;
    let v = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DECODE_DEPTH).map_err(|e| {
        match e {
            rmpv::decode::Error::DepthLimitExceeded => format!(
                "it nests deeper than MessagePack decoding allows here ({MAX_DECODE_DEPTH} levels of the decoder)"
            ),
            e => format!("it is not MessagePack: {e}"),
        }
    })?;
    if !rd.is_empty() {
        return Err(format!(
            "it is not one MessagePack value: {} more bytes follow the first value (of {} bytes)",
            rd.len(),
            bytes.len() - rd.len()
        ));
    }
    Ok(v)
}

/// How deep the decoder may recurse (rmpv counts about two of its levels per level of
/// nesting): states nest far less; deeper input is refused with an error.
const MAX_DECODE_DEPTH: usize = 4096;

/// The stack of the thread that decodes and renders a state: each level of nesting takes
/// a few frames of the decoder and of the renderers, more in debug builds than a runtime
/// worker's 2 MiB stack holds at [`MAX_DECODE_DEPTH`].
const RENDER_STACK: usize = 64 << 20;

/// Decode `bytes` (one MessagePack value) and render it, as text for people (a JSON
/// string) or as JSON; on a thread of its own with a stack deep enough for any value
/// that decodes. Blocks until done.
pub fn render(bytes: Vec<u8>, text: bool) -> Result<Json, String> {
    std::thread::Builder::new()
        .name("hotswap-render".into())
        .stack_size(RENDER_STACK)
        .spawn(move || {
            let v = decode(&bytes)?;
            Ok(if text {
                Json::String(to_text(&v))
            } else {
                to_json(&v)
            })
        })
        .map_err(|e| format!("cannot start a thread to render it: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("rendering it failed".into()))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A timestamp extension's seconds and nanoseconds, if `data` has one of its three forms.
fn timestamp(data: &[u8]) -> Option<(i64, u32)> {
    match data.len() {
        4 => Some((i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0)),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            let nanos = (v >> 34) as u32;
            (nanos < 1_000_000_000).then_some(((v & 0x3_ffff_ffff) as i64, nanos))
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().ok()?);
            let secs = i64::from_be_bytes(data[4..].try_into().ok()?);
            (nanos < 1_000_000_000).then_some((secs, nanos))
        }
        _ => None,
    }
}

fn float_json(f: f64, text: String) -> Json {
    if f.is_finite() {
        // Through the shortest text of the original width, so that 0.1f32 stays 0.1.
        let f = text.parse::<f64>().unwrap_or(f);
        Number::from_f64(f).map_or(Json::String(text), Json::Number)
    } else if f.is_nan() {
        json!("NaN")
    } else if f > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

/// The JSON rendering of `v` (see the module docs for the rules).
pub fn to_json(v: &Value) -> Json {
    json_at(v, 0)
}

fn json_at(v: &Value, depth: usize) -> Json {
    if depth > MAX_JSON_DEPTH && matches!(v, Value::Array(_) | Value::Map(_)) {
        return json!({ "$deep": compact(v) });
    }
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => json!(u),
            (None, Some(s)) => json!(s),
            (None, None) => json!(i.to_string()),
        },
        Value::F32(f) => float_json(f64::from(*f), f.to_string()),
        Value::F64(f) => float_json(*f, f.to_string()),
        Value::String(s) => match s.as_str() {
            Some(s) => Json::String(s.to_string()),
            None => json!({ "$invalid_utf8": hex(s.as_bytes()) }),
        },
        Value::Binary(b) => json!({ "$binary": hex(b) }),
        Value::Array(a) => Json::Array(a.iter().map(|x| json_at(x, depth + 1)).collect()),
        Value::Map(m) => {
            let keyed: Vec<(String, Json)> = m
                .iter()
                .map(|(k, x)| (key_text(k, depth + 1), json_at(x, depth + 1)))
                .collect();
            let mut obj = Map::new();
            let mut clash = false;
            for (k, x) in keyed {
                clash |= obj.insert(k, x).is_some();
            }
            let label_shaped = obj.len() == 1 && obj.keys().all(|k| LABELS.contains(&k.as_str()));
            if clash || label_shaped {
                json!({ "$map": m.iter().map(|(k, x)| json!([json_at(k, depth + 1), json_at(x, depth + 1)])).collect::<Vec<_>>() })
            } else {
                Json::Object(obj)
            }
        }
        Value::Ext(-1, data) => match timestamp(data) {
            Some((s, n)) => json!({ "$timestamp": { "seconds": s, "nanoseconds": n } }),
            None => json!({ "$ext": { "type": -1, "data": hex(data) } }),
        },
        Value::Ext(t, data) => json!({ "$ext": { "type": t, "data": hex(data) } }),
    }
}

/// A map key as a JSON object key: a string is itself, anything else the compact JSON
/// text of its rendering.
fn key_text(k: &Value, depth: usize) -> String {
    match k {
        Value::String(s) if s.is_str() => s.as_str().unwrap_or_default().to_string(),
        other => json_at(other, depth).to_string(),
    }
}

/// The text rendering of `v`, for people (see the module docs); no trailing newline.
pub fn to_text(v: &Value) -> String {
    let mut out = String::new();
    text(v, 0, &mut out);
    out
}

/// The text rendering on one line.
fn compact(v: &Value) -> String {
    let mut out = String::new();
    one_line(v, &mut out, usize::MAX);
    out
}

/// The text rendering on one line if it is at most `max` bytes long. Rendering stops as
/// soon as it is longer, so that deciding how to lay out a large state costs little.
fn compact_within(v: &Value, max: usize) -> Option<String> {
    let mut out = String::new();
    one_line(v, &mut out, max).then_some(out)
}

fn scalar_text(v: &Value, out: &mut String) -> bool {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::F32(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::F64(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::String(s) => match s.as_str() {
            Some(s) => out.push_str(&Json::String(s.to_string()).to_string()),
            None => {
                let _ = write!(out, "<invalid UTF-8: {}>", hex(s.as_bytes()));
            }
        },
        Value::Binary(b) if b.is_empty() => out.push_str("<binary 0 bytes>"),
        Value::Binary(b) => {
            let _ = write!(out, "<binary {} bytes: {}>", b.len(), hex(b));
        }
        Value::Ext(-1, data) if timestamp(data).is_some() => {
            let (s, n) = timestamp(data).unwrap_or_default();
            let mut t = format!("{s}.{n:09}");
            while t.ends_with('0') {
                t.pop();
            }
            if t.ends_with('.') {
                t.pop();
            }
            let _ = write!(out, "<timestamp {t} s>");
        }
        Value::Ext(t, data) => {
            let _ = write!(out, "<ext {t}, {} bytes: {}>", data.len(), hex(data));
        }
        Value::Array(_) | Value::Map(_) => return false,
    }
    true
}

/// Render `v` on one line into `out`; `false` (with `out` cut short) once `out` is longer
/// than `max` bytes.
fn one_line(v: &Value, out: &mut String, max: usize) -> bool {
    // Long strings and binaries are not rendered only to be found too long.
    let least = match v {
        Value::String(s) => s.as_bytes().len(),
        Value::Binary(b) | Value::Ext(_, b) => 2 * b.len(),
        _ => 0,
    };
    if out.len().saturating_add(least) > max {
        return false;
    }
    if scalar_text(v, out) {
        return out.len() <= max;
    }
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if !one_line(x, out, max) {
                    return false;
                }
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if !one_line(k, out, max) {
                    return false;
                }
                out.push_str(": ");
                if !one_line(x, out, max) {
                    return false;
                }
            }
            out.push('}');
        }
        _ => {}
    }
    out.len() <= max
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn text(v: &Value, level: usize, out: &mut String) {
    if scalar_text(v, out) {
        return;
    }
    if let Some(flat) = compact_within(v, LINE.saturating_sub(level * 2)) {
        out.push_str(&flat);
        return;
    }
    match v {
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                indent(out, level + 1);
                text(x, level + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            indent(out, level);
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("{\n");
            for (i, (k, x)) in m.iter().enumerate() {
                indent(out, level + 1);
                one_line(k, out, usize::MAX);
                out.push_str(": ");
                text(x, level + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            indent(out, level);
            out.push('}');
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    fn enc<T: Serialize>(v: &T) -> Value {
        decode(&rmp_serde::to_vec_named(v).expect("encode")).expect("decode")
    }

    /// A binary, as `serde_bytes` would encode it.
    struct Bin(Vec<u8>);
    impl Serialize for Bin {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    #[test]
    fn integer_keyed_maps_render_with_their_keys_as_strings() {
        let m: BTreeMap<u32, u64> = [(0, 10), (2, 30), (10, 1)].into();
        let v = enc(&m);
        assert_eq!(to_json(&v), json!({ "0": 10, "2": 30, "10": 1 }));
        assert_eq!(to_text(&v), "{0: 10, 2: 30, 10: 1}", "in the state's order");
        let m: BTreeMap<i64, bool> = [(-5, true), (i64::MAX, false)].into();
        assert_eq!(
            to_json(&enc(&m)),
            json!({ "-5": true, "9223372036854775807": false })
        );
    }

    #[test]
    fn tuple_and_enum_keys_render_as_their_compact_json() {
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum Slot {
            Free,
            Taken(u8),
            Pair(u8, u8),
            Named { x: i8 },
        }
        let m: BTreeMap<(u32, String), bool> = [
            ((1, "a".to_string()), true),
            ((2, "b\"".to_string()), false),
        ]
        .into();
        let v = enc(&m);
        assert_eq!(
            to_json(&v),
            json!({ "[1,\"a\"]": true, "[2,\"b\\\"\"]": false })
        );
        assert_eq!(to_text(&v), r#"{[1, "a"]: true, [2, "b\""]: false}"#);

        let m: BTreeMap<Slot, u32> = [
            (Slot::Free, 1),
            (Slot::Taken(7), 2),
            (Slot::Pair(1, 2), 3),
            (Slot::Named { x: -1 }, 4),
        ]
        .into();
        let v = enc(&m);
        assert_eq!(
            to_json(&v),
            json!({
                "Free": 1,
                "{\"Taken\":7}": 2,
                "{\"Pair\":[1,2]}": 3,
                "{\"Named\":{\"x\":-1}}": 4,
            })
        );
        assert_eq!(
            to_text(&v),
            r#"{
  "Free": 1,
  {"Taken": 7}: 2,
  {"Pair": [1, 2]}: 3,
  {"Named": {"x": -1}}: 4
}"#
        );
    }

    #[test]
    fn nested_maps_binaries_and_floats_render() {
        #[derive(Serialize)]
        struct State {
            name: String,
            by_id: BTreeMap<u16, BTreeMap<(i8, i8), Vec<u8>>>,
            blob: Bin,
            empty: Bin,
            ratio: f32,
            odd: Vec<f64>,
            maybe: Option<u8>,
        }
        let inner: BTreeMap<(i8, i8), Vec<u8>> = [((0, -1), vec![1, 2]), ((3, 4), vec![])].into();
        let s = State {
            name: "n".into(),
            by_id: [(7, inner.clone()), (8, BTreeMap::new())].into(),
            blob: Bin(vec![0x0a, 0x1b, 0xff]),
            empty: Bin(vec![]),
            ratio: 0.1,
            odd: vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0],
            maybe: None,
        };
        let v = enc(&s);
        assert_eq!(
            to_json(&v),
            json!({
                "name": "n",
                "by_id": { "7": { "[0,-1]": [1, 2], "[3,4]": [] }, "8": {} },
                "blob": { "$binary": "0a1bff" },
                "empty": { "$binary": "" },
                "ratio": 0.1,
                "odd": ["NaN", "inf", "-inf", 1.0],
                "maybe": null,
            })
        );
        let t = to_text(&v);
        assert_eq!(
            t,
            r#"{
  "name": "n",
  "by_id": {7: {[0, -1]: [1, 2], [3, 4]: []}, 8: {}},
  "blob": <binary 3 bytes: 0a1bff>,
  "empty": <binary 0 bytes>,
  "ratio": 0.1,
  "odd": [NaN, inf, -inf, 1.0],
  "maybe": null
}"#
        );
        // Long maps break over lines, each level indented.
        let wide: BTreeMap<u32, BTreeMap<u32, String>> = (0..3)
            .map(|i| (i, (0..4).map(|j| (j, "x".repeat(12))).collect()))
            .collect();
        let t = to_text(&enc(&wide));
        assert!(
            t.starts_with("{\n  0: {\n    0: \"xxxxxxxxxxxx\",\n"),
            "{t}"
        );
        assert!(t.ends_with("\n  }\n}"), "{t}");
    }

    #[test]
    fn extension_types_are_labelled() {
        #[derive(Serialize)]
        #[serde(rename = "_ExtStruct")]
        struct Ext((i8, Bin));
        let v = enc(&Ext((5, Bin(vec![1, 2]))));
        assert_eq!(
            to_json(&v),
            json!({ "$ext": { "type": 5, "data": "0102" } })
        );
        assert_eq!(to_text(&v), "<ext 5, 2 bytes: 0102>");
        // The timestamp extension in its three forms.
        let ts32 = Value::Ext(-1, 12u32.to_be_bytes().to_vec());
        assert_eq!(
            to_json(&ts32),
            json!({ "$timestamp": { "seconds": 12, "nanoseconds": 0 } })
        );
        assert_eq!(to_text(&ts32), "<timestamp 12 s>");
        let ts64 = Value::Ext(-1, ((500_000_000u64 << 34) | 12).to_be_bytes().to_vec());
        assert_eq!(to_text(&ts64), "<timestamp 12.5 s>");
        let mut d = 1u32.to_be_bytes().to_vec();
        d.extend_from_slice(&(-3i64).to_be_bytes());
        assert_eq!(
            to_json(&Value::Ext(-1, d)),
            json!({ "$timestamp": { "seconds": -3, "nanoseconds": 1 } })
        );
        let bad = Value::Ext(-1, vec![1, 2, 3]);
        assert_eq!(
            to_json(&bad),
            json!({ "$ext": { "type": -1, "data": "010203" } })
        );
    }

    #[test]
    fn colliding_keys_and_label_shaped_maps_keep_every_entry() {
        let m = Value::Map(vec![
            (Value::from(1), Value::from("int")),
            (Value::from("1"), Value::from("str")),
        ]);
        assert_eq!(to_json(&m), json!({ "$map": [[1, "int"], ["1", "str"]] }));
        assert_eq!(to_text(&m), r#"{1: "int", "1": "str"}"#);
        // A real map that looks like a binary's rendering is not taken for one.
        let m = Value::Map(vec![(Value::from("$binary"), Value::from("00"))]);
        assert_eq!(to_json(&m), json!({ "$map": [["$binary", "00"]] }));
        // Binary and nil keys.
        let m = Value::Map(vec![
            (Value::Binary(vec![0xab]), Value::from(1)),
            (Value::Nil, Value::from(2)),
        ]);
        assert_eq!(to_json(&m), json!({ "{\"$binary\":\"ab\"}": 1, "null": 2 }));
        assert_eq!(to_text(&m), "{<binary 1 bytes: ab>: 1, null: 2}");
    }

    #[test]
    fn invalid_utf8_deep_nesting_and_bad_input() {
        // A str of 2 bytes that are not UTF-8.
        let v = decode(&[0xa2, 0xff, 0xfe]).unwrap();
        assert_eq!(to_json(&v), json!({ "$invalid_utf8": "fffe" }));
        assert_eq!(to_text(&v), "<invalid UTF-8: fffe>");

        let mut deep = Value::from(1);
        for _ in 0..150 {
            deep = Value::Array(vec![deep]);
        }
        let j = to_json(&deep);
        let text = serde_json::to_string(&j).unwrap();
        let back: Json = serde_json::from_str(&text).expect("a JSON reader takes it");
        assert!(text.contains("$deep"), "{text}");
        assert_eq!(back, j);

        // Large states render whole, one entry a line, without rendering each level twice.
        let big: BTreeMap<u32, Bin> = (0..20_000).map(|i| (i, Bin(vec![7; 64]))).collect();
        let t = to_text(&enc(&big));
        assert_eq!(t.lines().count(), 20_002);
        assert!(
            t.contains("\n  19999: <binary 64 bytes: 0707"),
            "{}",
            &t[t.len() - 200..]
        );
        let t = to_text(&deep);
        assert_eq!(t.lines().count(), 301, "one bracket a line past the width");
        assert_eq!(t.lines().nth(150).map(str::trim), Some("1"));

        // Deep values render on a thread with a stack for them; deeper ones than the decoder
        // allows are an error.
        let mut bytes = vec![0x91; 1000];
        bytes.push(0x01);
        let j = render(bytes.clone(), false).expect("1000 levels render");
        assert!(j.to_string().contains("$deep"));
        let t = render(bytes, true).expect("1000 levels render");
        assert_eq!(t.as_str().unwrap_or_default().lines().count(), 2001);
        let mut bytes = vec![0x91; 20_000];
        bytes.push(0x01);
        let e = render(bytes, true).unwrap_err();
        assert!(
            e.contains("nests deeper"),
            "too deep: an error, not a crash: {e}"
        );

        let e = decode(&[0x93, 0x01]).unwrap_err();
        assert!(e.contains("not MessagePack"), "{e}");
        let e = decode(&[0x01, 0x02]).unwrap_err();
        assert!(e.contains("1 more bytes follow"), "{e}");
        assert!(decode(&[]).is_err());
    }
}

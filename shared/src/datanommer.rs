//! A message's `msg` as datanommer stores it, so that `/raw?contains=` can match exactly what
//! datagrepper matches.
//!
//! datagrepper 0.9.7's `contains` is SQL `LIKE '%needle%'` over datanommer.models 0.9.1's `_msg`
//! column, which holds `fedmsg.encoding.dumps(msg)`: Python's `json.dumps` with sorted keys,
//! compact separators (`,` and `:`, no spaces) and `ensure_ascii` (every character outside
//! printable ASCII as `\uXXXX`, astral ones as surrogate pairs), floats as Python's `repr`.
//! The envelope as published (`messages.body`) may differ from that text in every one of these
//! points, so the worker writes this form beside it (`messages.datanommer_msg`) and ClickHouse
//! runs the `LIKE` on it.
//!
//! Not reproduced: integers beyond 64 bits (Python keeps them exact; they are read as floats
//! here) and `NaN`/`Infinity`, which JSON cannot carry in the first place.

use serde_json::Value;

/// `fedmsg.encoding.dumps(msg)`, as datanommer.models 0.9.1 stores `msg`.
///
/// ```
/// use statscache_shared::datanommer::datanommer_msg;
/// let msg = serde_json::json!({"name": "é", "author": "ralph", "n": [1, 1e-05]});
/// assert_eq!(datanommer_msg(&msg), r#"{"author":"ralph","n":[1,1e-05],"name":"\u00e9"}"#);
/// ```
pub fn datanommer_msg(msg: &Value) -> String {
    let mut text = String::new();
    write_value(&mut text, msg);
    text
}

fn write_value(text: &mut String, value: &Value) {
    match value {
        Value::Null => text.push_str("null"),
        Value::Bool(true) => text.push_str("true"),
        Value::Bool(false) => text.push_str("false"),
        Value::Number(number) => {
            if let Some(whole) = number.as_i64() {
                text.push_str(&whole.to_string());
            } else if let Some(whole) = number.as_u64() {
                text.push_str(&whole.to_string());
            } else {
                text.push_str(&python_float_repr(number.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(string) => write_string(text, string),
        Value::Array(items) => {
            text.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    text.push(',');
                }
                write_value(text, item);
            }
            text.push(']');
        }
        Value::Object(map) => {
            // Python sorts str keys by code point, which is the byte order of their UTF-8.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            text.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    text.push(',');
                }
                write_string(text, key);
                text.push(':');
                write_value(text, &map[key]);
            }
            text.push('}');
        }
    }
}

/// A JSON string as `json.dumps(..., ensure_ascii=True)` writes it.
fn write_string(text: &mut String, string: &str) {
    text.push('"');
    for character in string.chars() {
        match character {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            '\u{8}' => text.push_str("\\b"),
            '\u{c}' => text.push_str("\\f"),
            ' '..='~' => text.push(character),
            _ => {
                let mut units = [0u16; 2];
                for unit in character.encode_utf16(&mut units) {
                    text.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    text.push('"');
}

/// Python's `repr(float)`: the shortest digits that read back as the same float, written
/// positionally for exponents from -5 to 15 (`0.0001`, `1e-05`, `1e+16`).
fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    if value.is_infinite() {
        let sign = if value < 0.0 { "-" } else { "" };
        return format!("{sign}Infinity");
    }
    // Rust's `{:e}` gives the same shortest digits: `-1.25e-7`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(unsigned) => ("-", unsigned),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // The position of the decimal point relative to the digits, as CPython's `decpt`.
    let point = exponent + 1;
    let digit_count = digits.len() as i32;
    let body = if !(-4 < point && point <= 16) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{fraction}e{exponent_sign}{:02}", exponent.abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= digit_count {
        format!("{digits}{}.0", "0".repeat((point - digit_count) as usize))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_python_writes_them() {
        // Each pair checked with CPython 3.11's `repr`.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (123456.789, "123456.789"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (-2.5e-100, "-2.5e-100"),
            (1344350850.886738, "1344350850.886738"),
            (0.1, "0.1"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value:e}");
        }
    }

    #[test]
    fn strings_are_escaped_as_ensure_ascii_does() {
        let msg = serde_json::json!({
            "b": "tab\there \"quoted\" back\\slash / \u{7f} \u{1}",
            "a": "é 😀",
        });
        assert_eq!(
            datanommer_msg(&msg),
            r#"{"a":"\u00e9 \ud83d\ude00","b":"tab\there \"quoted\" back\\slash / \u007f \u0001"}"#
        );
    }

    #[test]
    fn keys_are_sorted_at_every_depth_and_numbers_keep_their_kind() {
        let msg: Value =
            serde_json::from_str(r#"{"z": {"y": 1, "x": [true, null, -3, 2.50]}, "Z": 1E2}"#)
                .unwrap();
        assert_eq!(
            datanommer_msg(&msg),
            r#"{"Z":100.0,"z":{"x":[true,null,-3,2.5],"y":1}}"#
        );
    }
}

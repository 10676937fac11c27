//! Fedora's statscache identifiers and what serves each of them here: the contract the worker's
//! `statscache-rows` plugin and the api's `/statscache/api/` share.
//!
//! statscache named a statistic per plugin *and* time window: `BasePlugin.ident` is the plugin's
//! `name` lower-cased, spaces turned into `-`, the characters `"'()*&?,` removed, then `-` and the
//! window as its `Schedule` prints it (`[Nd][Nh][Nm][Ns]`): `volume, by category` every minute is
//! `volume-by-category-1m`. Clients (dashboards, its own `display.html`) hold those names, so
//! they are computed here by that rule ([`ident`]) from statscache_plugins' names and
//! intervals, each mapped to the plugin of ours that keeps its facts.
//!
//! A row of a windowed identifier is one (window, key) with messages, stamped with the window's
//! *end* (`Schedule.next`; windows aligned on UTC midnight, so on multiples of their length since
//! the epoch). Windows of a day are whole days of our plugin's daily rollup; shorter ones are
//! counted per period by the `statscache-rows` plugin ([`ROWS_PLUGIN`]), whose facts are those
//! rows, so that a page of `volume-1s` over all history is located from rollups instead of
//! counting every second of history.

/// The identifier of the plugin whose facts are the rows of every windowed identifier shorter
/// than a day (key: the statscache identifier; counted: the (window, key) rows).
pub const ROWS_PLUGIN: &str = "statscache-rows";

/// Seconds in a day: windows this long are read from the daily rollups.
pub const DAY: u32 = 86_400;

/// What statscache's model for an identifier held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// `volume` per window (and per `column` when there is one).
    Volume,
    /// The release-engineering log: the latest `message` per (`category`,
    /// `category_constraint`).
    Log,
}

/// One of statscache_plugins' plugins and how we keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// statscache's `name`, from which identifiers are made.
    pub name: &'static str,
    /// The identifier of our plugin holding its facts.
    pub plugin: &'static str,
    /// Its windows, in seconds (empty: no `Schedule`, one identifier without a suffix).
    pub windows: &'static [u32],
    /// The model column holding our plugin's key (`category`, `user`...); `None` when the key
    /// is constant (total volume).
    pub column: Option<&'static str>,
    pub model: Model,
}

/// statscache_plugins' plugins: those its `setup.py` enables, and the disabled volume by topic,
/// user and package.
pub const FAMILIES: [Family; 9] = [
    Family {
        name: "volume",
        plugin: "volume",
        windows: &[1, 5, 60],
        column: None,
        model: Model::Volume,
    },
    Family {
        name: "volume, by category",
        plugin: "volume-by-category",
        windows: &[1, 15, 60, 3600, DAY],
        column: Some("category"),
        model: Model::Volume,
    },
    Family {
        name: "volume, by topic",
        plugin: "volume-by-topic",
        windows: &[1, 5, 60],
        column: Some("topic"),
        model: Model::Volume,
    },
    Family {
        name: "volume, by user",
        plugin: "volume-by-user",
        windows: &[1, 5, 60],
        column: Some("user"),
        model: Model::Volume,
    },
    Family {
        name: "volume, by package",
        plugin: "volume-by-package",
        windows: &[1, 5, 60],
        column: Some("package"),
        model: Model::Volume,
    },
    Family {
        name: "Number of contribution to pagure.io",
        plugin: "pagure-contributions",
        windows: &[DAY],
        column: None,
        model: Model::Volume,
    },
    Family {
        name: "Number of contribution per user to pagure.io",
        plugin: "pagure-contributions-by-user",
        windows: &[DAY],
        column: Some("user"),
        model: Model::Volume,
    },
    Family {
        name: "Number of contribution per project to pagure.io",
        plugin: "pagure-contributions-by-project",
        windows: &[DAY],
        column: Some("project"),
        model: Model::Volume,
    },
    Family {
        name: "Release engineering event logs",
        plugin: "release-engineering-event-logs",
        windows: &[],
        column: None,
        model: Model::Log,
    },
];

/// One statscache identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    pub ident: String,
    pub family: Family,
    /// The window in seconds; `None` for an identifier without a schedule (the log).
    pub window: Option<u32>,
}

impl Identifier {
    /// Whether its rows are counted by the [`ROWS_PLUGIN`] (windows shorter than a day).
    pub fn counted_by_rows_plugin(&self) -> bool {
        matches!(self.window, Some(seconds) if seconds < DAY)
    }
}

/// Every statscache identifier, in [`FAMILIES`] order.
pub fn identifiers() -> Vec<Identifier> {
    let mut all = Vec::new();
    for family in FAMILIES {
        if family.windows.is_empty() {
            all.push(Identifier {
                ident: ident(family.name, None),
                family,
                window: None,
            });
        }
        for seconds in family.windows {
            all.push(Identifier {
                ident: ident(family.name, Some(*seconds)),
                family,
                window: Some(*seconds),
            });
        }
    }
    all
}

/// The identifier named `ident`, if statscache had it.
pub fn find(ident: &str) -> Option<Identifier> {
    identifiers()
        .into_iter()
        .find(|identifier| identifier.ident == ident)
}

/// `BasePlugin.ident`: `name` lower-cased, spaces to `-`, `"'()*&?,` removed, then `-` and the
/// schedule of `window` seconds if there is one.
pub fn ident(name: &str, window: Option<u32>) -> String {
    let mut ident = String::with_capacity(name.len() + 4);
    for character in name.chars() {
        match character {
            ' ' => ident.push('-'),
            '"' | '\'' | '(' | ')' | '*' | '&' | '?' | ',' => {}
            other => ident.extend(other.to_lowercase()),
        }
    }
    if let Some(seconds) = window {
        ident.push('-');
        ident.push_str(&schedule(seconds));
    }
    ident
}

/// `Schedule.__str__`: days, hours, minutes and seconds, each only when not zero, and `0s` for
/// an empty interval.
pub fn schedule(seconds: u32) -> String {
    let days = seconds / DAY;
    let hours = seconds % DAY / 3600;
    let minutes = seconds % 3600 / 60;
    let rest = seconds % 60;
    let mut printed = String::new();
    for (amount, unit) in [(days, 'd'), (hours, 'h'), (minutes, 'm')] {
        if amount > 0 {
            printed.push_str(&format!("{amount}{unit}"));
        }
    }
    if rest > 0 || printed.is_empty() {
        printed.push_str(&format!("{rest}s"));
    }
    printed
}

/// `value` as Python's `json.dumps` writes it by default, as statscache answered: `", "` and
/// `": "` between items, every non-ASCII character escaped (`\u00e9`, surrogate pairs beyond
/// the BMP). Object members keep `value`'s order (sorted: serde_json's maps are).
pub fn python_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_json).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(members) => {
            let mut items = Vec::with_capacity(members.len());
            for (name, member) in members {
                items.push(format!(
                    "{}: {}",
                    python_json(&Value::String(name.clone())),
                    python_json(member)
                ));
            }
            format!("{{{}}}", items.join(", "))
        }
        scalar => {
            let mut escaped = String::new();
            for character in scalar.to_string().chars() {
                if character.is_ascii() {
                    escaped.push(character);
                    continue;
                }
                let mut units = [0u16; 2];
                for unit in character.encode_utf16(&mut units) {
                    escaped.push_str(&format!("\\u{unit:04x}"));
                }
            }
            escaped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_as_python_wrote_it() {
        let value = serde_json::json!([{"b": "\u{e9}\u{1f600}", "a": null}, 1.0, 2, []]);
        assert_eq!(
            python_json(&value),
            r#"[{"a": null, "b": "\u00e9\ud83d\ude00"}, 1.0, 2, []]"#
        );
    }

    #[test]
    fn schedules_print_as_statscache_printed_them() {
        assert_eq!(schedule(1), "1s");
        assert_eq!(schedule(15), "15s");
        assert_eq!(schedule(60), "1m");
        assert_eq!(schedule(3600), "1h");
        assert_eq!(schedule(DAY), "1d");
        assert_eq!(schedule(DAY + 3600 + 60 + 1), "1d1h1m1s");
        assert_eq!(schedule(0), "0s");
    }

    #[test]
    fn identifiers_are_statscache_s() {
        let idents: Vec<String> = identifiers().into_iter().map(|i| i.ident).collect();
        assert_eq!(
            idents,
            [
                "volume-1s",
                "volume-5s",
                "volume-1m",
                "volume-by-category-1s",
                "volume-by-category-15s",
                "volume-by-category-1m",
                "volume-by-category-1h",
                "volume-by-category-1d",
                "volume-by-topic-1s",
                "volume-by-topic-5s",
                "volume-by-topic-1m",
                "volume-by-user-1s",
                "volume-by-user-5s",
                "volume-by-user-1m",
                "volume-by-package-1s",
                "volume-by-package-5s",
                "volume-by-package-1m",
                "number-of-contribution-to-pagure.io-1d",
                "number-of-contribution-per-user-to-pagure.io-1d",
                "number-of-contribution-per-project-to-pagure.io-1d",
                "release-engineering-event-logs",
            ]
        );
        assert_eq!(ident("What's (new)? A & B*", None), "whats-new-a--b");
    }

    #[test]
    fn only_windows_shorter_than_a_day_are_counted_by_the_rows_plugin() {
        let counted = |ident: &str| find(ident).map(|i| i.counted_by_rows_plugin());
        assert_eq!(counted("volume-1s"), Some(true));
        assert_eq!(counted("volume-by-category-1h"), Some(true));
        assert_eq!(counted("volume-by-category-1d"), Some(false));
        assert_eq!(counted("release-engineering-event-logs"), Some(false));
        assert_eq!(counted("volume"), None);
    }
}

//! A SQL statement that keeps each fragment with the values it binds, so the `?`s and their
//! values cannot get out of order (a wrong order gives wrong numbers, not an error). Every user
//! value is bound; only identifiers from the code's fixed lists are written into the text.

use clickhouse::query::Query;
use clickhouse::Client;

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl From<&str> for Bind {
    fn from(v: &str) -> Bind {
        Bind::Str(v.to_owned())
    }
}

impl From<String> for Bind {
    fn from(v: String) -> Bind {
        Bind::Str(v)
    }
}

impl From<&String> for Bind {
    fn from(v: &String) -> Bind {
        Bind::Str(v.clone())
    }
}

impl From<i64> for Bind {
    fn from(v: i64) -> Bind {
        Bind::Int(v)
    }
}

impl From<u64> for Bind {
    fn from(v: u64) -> Bind {
        Bind::UInt(v)
    }
}

impl From<u16> for Bind {
    fn from(v: u16) -> Bind {
        Bind::UInt(u64::from(v))
    }
}

impl From<f64> for Bind {
    fn from(v: f64) -> Bind {
        Bind::Float(v)
    }
}

/// SQL text and its values, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    pub fn new() -> Sql {
        Sql::default()
    }

    /// Appends `fragment` with the values of its `?`s, in order. Panics (a bug in the calling
    /// code, caught by any test that runs the query) when their numbers differ.
    pub fn push(&mut self, fragment: &str, binds: impl IntoIterator<Item = Bind>) -> &mut Sql {
        let before = self.binds.len();
        self.binds.extend(binds);
        let marks = fragment.matches('?').count();
        assert_eq!(marks, self.binds.len() - before, "SQL fragment {fragment:?} has {marks} `?` for {} values", self.binds.len() - before);
        self.text.push_str(fragment);
        self
    }

    /// Appends another statement fragment with its values.
    pub fn append(&mut self, other: Sql) -> &mut Sql {
        self.text.push_str(&other.text);
        self.binds.extend(other.binds);
        self
    }

    /// `?, ?, …` binding each value (a list inside a function call, `IN (…)` …).
    pub fn push_list(&mut self, values: impl IntoIterator<Item = Bind>) -> &mut Sql {
        let values: Vec<Bind> = values.into_iter().collect();
        let marks = vec!["?"; values.len()].join(", ");
        self.push(&marks, values)
    }

    /// `AND column = ?` for each filter (columns come from the code's fixed lists).
    pub fn push_filters(&mut self, filters: &[(&'static str, String)]) -> &mut Sql {
        for (column, value) in filters {
            self.push(&format!(" AND {column} = ?"), [Bind::from(value)]);
        }
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The query, every value bound in order.
    pub fn query(&self, client: &Client) -> Query {
        let mut q = client.query(&self.text);
        for bind in &self.binds {
            q = match bind {
                Bind::Str(v) => q.bind(v.as_str()),
                Bind::Int(v) => q.bind(*v),
                Bind::UInt(v) => q.bind(*v),
                Bind::Float(v) => q.bind(*v),
            };
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_carry_their_values() {
        let mut sql = Sql::new();
        sql.push("SELECT quantilesExact(", [])
            .push_list([0.5.into(), 0.75.into()])
            .push(")(value) FROM metrics WHERE site = ?", ["demo".into()]);
        sql.push_filters(&[("url", "/a".into()), ("device", "mobile".into())]);
        assert_eq!(sql.text(), "SELECT quantilesExact(?, ?)(value) FROM metrics WHERE site = ? AND url = ? AND device = ?");
        assert_eq!(sql.binds, vec![Bind::Float(0.5), Bind::Float(0.75), "demo".into(), "/a".into(), "mobile".into()]);
    }

    #[test]
    #[should_panic(expected = "has 2 `?` for 1 values")]
    fn a_fragment_without_its_values_is_a_bug() {
        Sql::new().push("a = ? AND b = ?", [Bind::Int(1)]);
    }
}

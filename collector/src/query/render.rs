//! One result shape for every read endpoint — a table with metadata — rendered as JSON, CSV or
//! Prometheus text (`format=json|csv|prometheus`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// Output format of a read endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Prometheus,
}

impl Format {
    pub const NAMES: [&'static str; 3] = ["json", "csv", "prometheus"];

    pub fn from_name(name: &str) -> Format {
        match name {
            "csv" => Format::Csv,
            "prometheus" => Format::Prometheus,
            _ => Format::Json,
        }
    }
}

/// A query result: context (site, metric, range, source, …), column names and rows.
#[derive(Debug)]
pub struct Table {
    /// Prefix of Prometheus metric names (`pulse_vitals`, `pulse_api_calls`, …).
    pub family: &'static str,
    /// JSON key holding the rows (`rows`, `points`).
    pub rows_key: &'static str,
    pub meta: Map<String, Value>,
    /// Context labels for Prometheus (site, metric, group_by …).
    pub labels: Vec<(&'static str, String)>,
    /// The column whose value labels a Prometheus sample (`group`), if any.
    pub label_column: Option<&'static str>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn render(self, format: Format) -> Response {
        match format {
            Format::Json => self.json(),
            Format::Csv => self.csv(),
            Format::Prometheus => self.prometheus(),
        }
    }

    fn json(self) -> Response {
        let mut body = self.meta;
        let rows = self.rows.into_iter().map(|row| Value::Object(self.columns.iter().cloned().zip(row).collect())).collect();
        body.insert(self.rows_key.to_owned(), Value::Array(rows));
        axum::Json(Value::Object(body)).into_response()
    }

    fn csv(self) -> Response {
        let mut out = csv::Writer::from_writer(Vec::new());
        let mut result = out.write_record(&self.columns);
        for row in &self.rows {
            if result.is_err() {
                break;
            }
            result = out.write_record(row.iter().map(csv_cell));
        }
        match (result, out.into_inner()) {
            (Ok(()), Ok(bytes)) => with_type(bytes, "text/csv; charset=utf-8"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "CSV encoding failed").into_response(),
        }
    }

    fn prometheus(self) -> Response {
        let mut out = String::new();
        let label_index = self.label_column.and_then(|c| self.columns.iter().position(|col| col == c));
        for (i, column) in self.columns.iter().enumerate() {
            if Some(i) == label_index || !self.rows.iter().any(|r| r[i].is_number()) {
                continue;
            }
            let name = format!("{}_{}", self.family, sanitize(column));
            out.push_str(&format!("# TYPE {name} gauge\n"));
            for row in &self.rows {
                let Some(value) = row[i].as_f64() else { continue };
                let mut labels: Vec<(String, String)> = self.labels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
                if let (Some(li), Some(c)) = (label_index, self.label_column) {
                    labels.push((c.to_owned(), cell_text(&row[li])));
                }
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
                out.push_str(&format!("{name}{{{}}} {value}\n", labels.join(",")));
            }
        }
        with_type(out.into_bytes(), "text/plain; version=0.0.4; charset=utf-8")
    }
}

fn with_type(body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A CSV cell that a spreadsheet shows as written. Text that starts with `=`, `+`, `-`, `@`, a
/// tab or a carriage return would be read as a formula (`=HYPERLINK(…)` in a release name, a URL
/// or a tag), so it gets a leading `'`, as OWASP's CSV-injection advice has it. Only text: numbers
/// (a negative custom metric's average) stay numbers.
fn csv_cell(value: &Value) -> String {
    match value {
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        other => cell_text(other),
    }
}

/// Prometheus metric names allow `[a-zA-Z0-9_:]`.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Label values escape `\`, `"` and newlines (Prometheus text format).
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A float as JSON: `null` when not finite (ClickHouse gives NaN for empty aggregates).
pub fn num(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn table() -> Table {
        Table {
            family: "pulse_vitals",
            rows_key: "rows",
            meta: Map::new(),
            labels: vec![("site", "demo".into())],
            label_column: Some("group"),
            columns: vec!["group".into(), "count".into(), "p75".into()],
            rows: vec![vec!["/a \"q\"".into(), 3.into(), num(12.5)], vec!["/b,c".into(), 1.into(), num(f64::NAN)]],
        }
    }

    async fn body(r: Response) -> String {
        String::from_utf8(r.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf8")
    }

    #[tokio::test]
    async fn csv_quotes_and_blanks() {
        let text = body(table().render(Format::Csv)).await;
        assert_eq!(text, "group,count,p75\n\"/a \"\"q\"\"\",3,12.5\n\"/b,c\",1,\n");
    }

    #[tokio::test]
    async fn csv_text_that_a_spreadsheet_would_run_is_neutralised_and_numbers_are_not() {
        let mut t = table();
        let formulas = ["=HYPERLINK(\"https://evil\",\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"];
        t.rows = formulas.iter().map(|f| vec![Value::from(*f), (-3).into(), num(-2.5)]).collect();
        t.rows.push(vec!["/a=b".into(), 1.into(), num(1.0)]);
        let text = body(t.render(Format::Csv)).await;
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("valid CSV");
        for (record, formula) in records.iter().zip(formulas) {
            assert_eq!(&record[0], format!("'{formula}"), "{text}");
            assert_eq!((&record[1], &record[2]), ("-3", "-2.5"), "numbers stay numbers: {text}");
        }
        assert_eq!(&records[formulas.len()][0], "/a=b", "only a leading character counts");
    }

    #[tokio::test]
    async fn prometheus_escapes_labels_and_skips_nan() {
        let text = body(table().render(Format::Prometheus)).await;
        assert!(text.contains("# TYPE pulse_vitals_count gauge\n"), "{text}");
        assert!(text.contains("pulse_vitals_p75{site=\"demo\",group=\"/a \\\"q\\\"\"} 12.5\n"), "{text}");
        assert!(!text.contains("/b,c\"} NaN"), "{text}");
    }
}

//! What a render reads of its variables. minijinja converts a render's whole context into its
//! own values before it starts, and an event's document — the row before and after, the table,
//! the session — is mostly what no template reads. The paths the templates name
//! (`data.new.booking_ref`) are known once they compile, so a render is given those and nothing
//! else.
//!
//! minijinja reports each read of the context as the chain of attributes that starts at a
//! variable (`undeclared_variables(true)`). An item lookup (`data['new']`, `rows[0]`), a filter,
//! a test, a loop or a `set` ends the chain where they start: the chain reported is a prefix of
//! what is read, and the value at its end is copied whole. An array on the way is copied whole
//! too, since no chain goes into one. What is not copied cannot be read, so the render's output,
//! its errors and its fuel are those of the whole context.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

/// The paths a body's templates read, each split at its dots.
#[derive(Debug, Clone, Default)]
pub(super) struct Reads(Vec<Vec<String>>);

impl Reads {
    /// From each template's `undeclared_variables(true)`.
    pub(super) fn of(templates: impl IntoIterator<Item = HashSet<String>>) -> Self {
        let paths: BTreeSet<String> = templates.into_iter().flatten().collect();
        Self(paths.iter().map(|path| path.split('.').map(str::to_owned).collect()).collect())
    }

    /// The context of a render with `variables` (a JSON object): what the paths reach of it.
    pub(super) fn context(&self, variables: &Value) -> minijinja::Value {
        let mut context = Map::new();
        for path in &self.0 {
            copy(variables, path, &mut context);
        }
        minijinja::Value::from(minijinja::value::Serde(&Value::Object(context)))
    }
}

/// Copies what `path` reaches in the object `from` into `into`, keeping the objects on the way.
fn copy(from: &Value, path: &[String], into: &mut Map<String, Value>) {
    let Some((key, rest)) = path.split_first() else { return };
    let Some(value) = from.as_object().and_then(|object| object.get(key)) else { return };
    if rest.is_empty() || !value.is_object() {
        into.insert(key.clone(), value.clone());
        return;
    }
    // A longer path under a value already copied whole finds its part there already.
    if let Value::Object(part) = into.entry(key.clone()).or_insert_with(|| Value::Object(Map::new())) {
        copy(value, rest, part);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn document() -> Value {
        json!({
            "event": "booking_status",
            "occurred_at": "2026-11-22T14:00:00+00:00",
            "data": {
                "op": "UPDATE",
                "old": {"id": 7, "booking_ref": "BK-7", "status": "PENDING", "note": null},
                "new": {"id": 7, "booking_ref": "BK-7", "status": "CONFIRMED", "note": null,
                        "passengers": [{"phone": "+4915112345678", "name": "Anna"}, {"phone": "+4915112345679"}]},
                "table": {"schema": "public", "name": "bookings"},
                "session_variables": {"x-hasura-role": "admin"}
            }
        })
    }

    /// Renders `source` with the whole document and with what its reads reach: (whole, pruned).
    fn both(source: &str, variables: &Value) -> (Result<String, String>, Result<String, String>) {
        let mut env = super::super::render::environment();
        env.add_template("t.html", source).unwrap();
        let template = env.get_template("t.html").unwrap();
        let reads = Reads::of([template.undeclared_variables(true)]);
        let render = |context: minijinja::Value| template.render(context).map_err(|error| format!("{error:#}"));
        (render(minijinja::Value::from(minijinja::value::Serde(variables))), render(reads.context(variables)))
    }

    #[test]
    fn a_render_given_only_what_its_templates_read_renders_as_with_everything() {
        let sources = [
            "{{ data.new.booking_ref }}",
            "{{ data.old.status ~ ' → ' ~ data.new.status }} {{ event }} {{ occurred_at }}",
            "{{ data.new.missing }}",
            "{{ data.nothing.at_all }}",
            "{{ nothing }}",
            "{% if data.new.missing is defined %}yes{% else %}no{% endif %}",
            "{% if data.new %}{{ data.new.status }}{% endif %} {{ data.new.note }}",
            "{% for p in data.new.passengers %}{{ p.phone }}{{ p.name|default('-') }},{% endfor %}",
            "{{ data.new.passengers[0].phone }} {{ data.new.passengers|length }}",
            "{{ data.new['booking_ref'] }} {{ data['new'].status }} {{ data.new|attr('status') }}",
            "{% set k = 'status' %}{{ data.new[k] }}",
            "{% for k, v in data.new|items %}{{ k }}={{ v }};{% endfor %}",
            "{{ data.new|tojson }} {{ data|length }} {{ data.table.name|upper }}",
            "{% set row = data.new %}{{ row.status }}/{{ row.id + 1 }}",
            "{% with r = data.old %}{{ r.booking_ref }}{% endwith %}",
            "{% macro m(x) %}{{ x.status }}{% endmacro %}{{ m(data.new) }}",
            "{{ data.new.passengers|map(attribute='phone')|join(',') }}",
            "{{ data.new.status if data.new.status == 'CONFIRMED' else data.old.status }}",
            "{% for i in range(2) %}{{ loop.index }}{% endfor %} {{ name|default('friend') }}",
            "{{ data.session_variables['x-hasura-role'] }} <b>{{ data.new.booking_ref }}</b>",
            "{% for p in data.new.passengers %}{{ p.nothing }}{% endfor %}",
        ];
        let variables = document();
        for source in sources {
            let (whole, pruned) = both(source, &variables);
            assert_eq!(pruned, whole, "{source}");
        }
        let (whole, _) = both("{{ data.new.booking_ref }}", &variables);
        assert_eq!(whole.unwrap(), "BK-7");
        let (whole, _) = both("{{ data.new.missing }}", &variables);
        assert!(whole.is_err(), "strict: an undefined variable is an error");
    }

    #[test]
    fn only_the_paths_read_are_copied() {
        let reads = Reads::of([
            HashSet::from(["data.new.booking_ref".to_owned(), "data.new.passengers".to_owned()]),
            HashSet::from(["event".to_owned(), "data.new.missing".to_owned(), "range".to_owned()]),
        ]);
        let expected = json!({
            "event": "booking_status",
            "data": {"new": {"booking_ref": "BK-7",
                             "passengers": [{"phone": "+4915112345678", "name": "Anna"}, {"phone": "+4915112345679"}]}}
        });
        assert_eq!(reads.context(&document()), minijinja::Value::from(minijinja::value::Serde(&expected)));
        // A path and a longer one under it: the shorter copies the value whole.
        let reads = Reads::of([HashSet::from(["data.old.status".to_owned(), "data.old".to_owned()])]);
        let expected = json!({"data": {"old": document()["data"]["old"].clone()}});
        assert_eq!(reads.context(&document()), minijinja::Value::from(minijinja::value::Serde(&expected)));
    }
}

//! What of its variables a template reads, so that only that is handed to the engine.

use std::collections::BTreeMap;

use serde_json::Value;

/// The paths of the variables templates read (`data.new.booking_ref`), as a tree. Rendering
/// converts only those parts into the engine's values: an event's document is many times what
/// a template names, and converting all of it was most of a render's cost.
#[derive(Debug, Clone, Default)]
pub(super) struct Reads {
    /// The value here is read as a whole: named itself, iterated, filtered, passed on, indexed.
    whole: bool,
    fields: BTreeMap<String, Reads>,
}

impl Reads {
    #[cfg(test)]
    pub(super) fn everything() -> Self {
        Self { whole: true, fields: BTreeMap::new() }
    }

    pub(super) fn add(&mut self, path: &str) {
        let mut node = self;
        for segment in path.split('.') {
            if node.whole {
                return;
            }
            node = node.fields.entry(segment.to_owned()).or_default();
        }
        node.whole = true;
        node.fields.clear();
    }

    /// `variables` as the templates see them. Below the top, an object lacking a name read from
    /// it is converted whole: the name may be a method, or a test of what is there, and a whole
    /// object answers either as before. A name lacking at the top is undefined either way.
    pub(super) fn project(&self, variables: &Value) -> minijinja::Value {
        self.part(variables, true)
    }

    fn part(&self, value: &Value, top: bool) -> minijinja::Value {
        match value {
            Value::Object(map) if !self.whole && (top || self.fields.keys().all(|key| map.contains_key(key))) => {
                minijinja::Value::from_pairs(
                    self.fields
                        .iter()
                        .filter_map(|(key, reads)| Some((key.as_str(), reads.part(map.get(key)?, false)))),
                )
            }
            _ => minijinja::Value::from(minijinja::value::Serde(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::messages::model::Channel;
    use crate::templates::render::{Compiled, Fields, parse_body, render};

    fn variables() -> Value {
        json!({
            "event": "booking_confirmed",
            "data": {
                "new": {"id": 7, "ref": "B-7", "items": [{"sku": "a"}, {"sku": "b"}], "meta": {"k": "v", "n": 2}},
                "old": {"id": 7, "ref": "B-7"},
                "table": {"schema": "public", "name": "bookings"}
            }
        })
    }

    #[test]
    fn only_the_named_parts_are_handed_over() {
        let mut reads = Reads::default();
        for path in ["data.new.ref", "data.new.meta", "data.new.meta.k", "event", "missing"] {
            reads.add(path);
        }
        let seen = reads.project(&variables());
        assert_eq!(
            serde_json::to_value(&seen).unwrap(),
            json!({"event": "booking_confirmed", "data": {"new": {"ref": "B-7", "meta": {"k": "v", "n": 2}}}})
        );
        // A name the object lacks may be a method or a test of what is there: the whole object.
        let mut reads = Reads::default();
        reads.add("data.old.items");
        let seen = serde_json::to_value(reads.project(&variables())).unwrap();
        assert_eq!(seen, json!({"data": {"old": {"id": 7, "ref": "B-7"}}}));
    }

    #[test]
    fn a_template_renders_as_if_it_saw_every_variable() {
        let sources = [
            "{{ data.new.ref }}",
            "{% for i in data.new.items %}{{ i.sku }}{{ loop.index }}{% endfor %}",
            "{{ data.new.meta|tojson }} {{ data.new|length }} {{ data.new.meta|dictsort }}",
            "{% for k, v in data.new.meta|items %}{{ k }}={{ v }} {% endfor %}",
            "{{ data['new'].ref }} {{ data.new['ref'] }} {{ data.new.items[1].sku }}",
            "{% set n = data.new %}{{ n.id }} {{ n|length }}",
            "{{ data.new.gone|default('none') }} {{ data.old is defined }} {{ data.gone is defined }}",
            "{% if data.new.id == data.old.id %}same{% endif %} {{ event }} {{ data.table.name|upper }}",
            "{% macro line(row) %}{{ row.ref }}/{{ row|length }}{% endmacro %}{{ line(data.new) }}",
            "{{ data.new.ref ~ data.new.nothing }}",
        ];
        for source in sources {
            let body = parse_body(Channel::Sms, "en", &json!({"text": source}), "b").unwrap();
            let compiled = Compiled::new(body).unwrap();
            let whole = compiled.seeing_all();
            let (seen, all) =
                (render("t", &compiled, &variables(), Fields::SEND), render("t", &whole, &variables(), Fields::SEND));
            assert_eq!(format!("{seen:?}"), format!("{all:?}"), "{source}");
        }
        // One part including another reads what the other names.
        let email = json!({"subject": "{{ data.new.ref }}", "html": "<p>{% include 'text' %}</p>",
                           "text": "{{ data.old.id }} {{ data.new.meta.k }}"});
        let compiled = Compiled::new(parse_body(Channel::Email, "en", &email, "b").unwrap()).unwrap();
        let seen = render("t", &compiled, &variables(), Fields::SEND).unwrap();
        assert_eq!(seen, render("t", &compiled.seeing_all(), &variables(), Fields::SEND).unwrap());
    }
}

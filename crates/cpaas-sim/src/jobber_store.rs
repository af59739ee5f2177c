//! Jobber's data and the GraphQL operations the sim answers, without HTTP: clients, their
//! properties, jobs and visits, addressed by `EncodedId`s (base64 of `gid://Jobber/<Type>/<n>`)
//! (docs/providers/jobber.md).
//!
//! | operation | arguments | answers |
//! |---|---|---|
//! | `clientCreate` | `input: ClientCreateInput!` (a first/last or company name) | `{client {id firstName lastName companyName}, userErrors}` |
//! | `propertyCreate` | `clientId: EncodedId!, input: PropertyCreateInput!` (`properties: [{address}]`) | `{properties [{id}], userErrors}` |
//! | `jobCreate` | `input: JobCreateAttributes!` (`propertyId`, `invoicing {invoicingType invoicingSchedule}`) | `{job {id jobNumber title}, userErrors}` |
//! | `visitCreate` | `jobId: EncodedId!, input: VisitCreateInput!` (`visits: [{title, schedule {startAt endAt}}]`) | `{createdVisits [{id startAt endAt}], job {id}, userErrors}` |
//! | `visitEditSchedule` | `id: EncodedId!, input: VisitEditScheduleInput!` (`startAt`, `endAt`) | `{visit {id startAt endAt}, userErrors}` |
//! | `visitDelete` | `visitIds: [EncodedId!]!` | `{visits [{id}], userErrors}` |
//! | `visit` (query) | `id: EncodedId!` | the visit, or `null` when there is none |
//!
//! Times are `LocalDateTimeAttributes {date, time, timezone}`. The sim has no time-zone
//! database, so it knows only `UTC`/`Etc/UTC`/`GMT` and answers any other zone with a user
//! error; real Jobber takes any IANA name.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The one account the sim plays; `accountId` in webhooks is its EncodedId-like `MQ==`.
pub(crate) const ACCOUNT_NUMBER: u64 = 1;
pub(crate) const ACCOUNT_ID: &str = "MQ==";

/// A visit as `GET /sim/jobber/visits` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobberVisit {
    pub id: String,
    pub job_id: String,
    pub client_id: String,
    pub title: Option<String>,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Property {
    client_id: String,
}

#[derive(Debug)]
struct Job {
    property_id: String,
}

/// What changed, for the webhooks: `(topic, item id)`.
pub(crate) type Change = (&'static str, String);

/// A top-level GraphQL error (`errors[]`), or user errors inside a payload.
pub(crate) type Errors = Vec<Value>;

#[derive(Debug, Default)]
pub(crate) struct JobberStore {
    next: u64,
    clients: BTreeSet<String>,
    properties: BTreeMap<String, Property>,
    jobs: BTreeMap<String, Job>,
    visits: BTreeMap<String, JobberVisit>,
}

pub(crate) fn encoded_id(kind: &str, n: u64) -> String {
    BASE64.encode(format!("gid://Jobber/{kind}/{n}"))
}

/// The type inside an EncodedId (`Client`, `Visit`, …), if it is one.
fn id_kind(id: &str) -> Option<String> {
    let text = String::from_utf8(BASE64.decode(id).ok()?).ok()?;
    let rest = text.strip_prefix("gid://Jobber/")?;
    let (kind, n) = rest.split_once('/')?;
    n.parse::<u64>().ok()?;
    Some(kind.to_owned())
}

/// graphql-ruby's answer to a variable of the wrong shape.
pub(crate) fn invalid_variable(name: &str, type_name: &str, explanation: &str) -> Value {
    json!({
        "message": format!("Variable ${name} of type {type_name} was provided invalid value"),
        "locations": [{"line": 1, "column": 1}],
        "extensions": {"value": Value::Null, "problems": [{"path": [], "explanation": explanation}]},
    })
}

fn user_error(message: &str, path: &[&str]) -> Value {
    json!({"message": message, "path": path})
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `{date, time, timezone}` as an instant; the sim knows only UTC.
fn local_date_time(value: Option<&Value>, field: &str) -> Result<DateTime<Utc>, Value> {
    let value = value.filter(|v| v.is_object()).ok_or_else(|| user_error(&format!("{field} is required"), &[field]))?;
    let date = value.get("date").and_then(Value::as_str).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let Some(date) = date else {
        return Err(user_error(&format!("{field}.date must be an ISO8601 date"), &[field, "date"]));
    };
    let time = match value.get("time").and_then(Value::as_str) {
        None => NaiveTime::MIN,
        Some(t) => NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
            .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
            .map_err(|_| user_error(&format!("{field}.time must be an ISO8601 time"), &[field, "time"]))?,
    };
    match value.get("timezone").and_then(Value::as_str) {
        Some("UTC" | "Etc/UTC" | "GMT" | "Etc/GMT") => Ok(date.and_time(time).and_utc()),
        Some(other) => {
            Err(user_error(&format!("the simulator knows only the UTC time zone, not '{other}'"), &[field, "timezone"]))
        }
        None => Err(user_error(&format!("{field}.timezone is required"), &[field, "timezone"])),
    }
}

fn visit_json(visit: &JobberVisit) -> Value {
    json!({
        "id": visit.id,
        "title": visit.title,
        "startAt": instant(visit.start_at),
        "endAt": instant(visit.end_at),
        "visitStatus": if visit.start_at > Utc::now() { "UPCOMING" } else { "ACTIVE" },
        "job": {"id": visit.job_id},
        "client": {"id": visit.client_id},
    })
}

fn text(input: &Value, name: &str) -> Option<String> {
    input.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// An argument that must be an EncodedId of `kind`.
fn id_argument(args: &Map<String, Value>, name: &str) -> Result<String, Errors> {
    let value = args.get(name).and_then(Value::as_str).unwrap_or_default();
    if id_kind(value).is_none() {
        let explanation = format!("'{value}' is not a valid EncodedId");
        return Err(vec![invalid_variable(name, "EncodedId!", &explanation)]);
    }
    Ok(value.to_owned())
}

fn object_argument<'a>(args: &'a Map<String, Value>, name: &str, type_name: &str) -> Result<&'a Value, Errors> {
    args.get(name)
        .filter(|v| v.is_object())
        .ok_or_else(|| vec![invalid_variable(name, type_name, "Expected value to not be null")])
}

impl JobberStore {
    fn next_id(&mut self, kind: &str) -> (String, u64) {
        self.next += 1;
        (encoded_id(kind, self.next), self.next)
    }

    /// Runs one root field with its arguments; the payload, and what changed.
    pub(crate) fn execute(&mut self, field: &str, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        match field {
            "clientCreate" => self.client_create(args),
            "propertyCreate" => self.property_create(args),
            "jobCreate" => self.job_create(args),
            "visitCreate" => self.visit_create(args),
            "visitEditSchedule" => self.visit_edit_schedule(args),
            "visitDelete" => self.visit_delete(args),
            "visit" => {
                let id = id_argument(args, "id")?;
                Ok((self.visits.get(&id).map_or(Value::Null, visit_json), Vec::new()))
            }
            other => Err(vec![json!({"message": format!("Field '{other}' doesn't exist on type 'Mutation'")})]),
        }
    }

    fn client_create(&mut self, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        let input = object_argument(args, "input", "ClientCreateInput!")?;
        let (first_name, last_name, company_name) =
            (text(input, "firstName"), text(input, "lastName"), text(input, "companyName"));
        if first_name.is_none() && last_name.is_none() && company_name.is_none() {
            let error = user_error("A client needs a first name, a last name or a company name", &["input"]);
            return Ok((json!({"client": null, "userErrors": [error]}), Vec::new()));
        }
        let (id, _) = self.next_id("Client");
        let reply = json!({"client": {
            "id": id, "firstName": first_name, "lastName": last_name, "companyName": company_name,
        }, "userErrors": []});
        self.clients.insert(id.clone());
        Ok((reply, vec![("CLIENT_CREATE", id)]))
    }

    fn property_create(&mut self, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        let client_id = id_argument(args, "clientId")?;
        let input = object_argument(args, "input", "PropertyCreateInput!")?;
        if !self.clients.contains(&client_id) {
            let error = user_error("Client not found", &["clientId"]);
            return Ok((json!({"properties": [], "userErrors": [error]}), Vec::new()));
        }
        let wanted = input.get("properties").and_then(Value::as_array).cloned().unwrap_or_default();
        // Since 2023-08-18 a property's address is required.
        if wanted.is_empty() || wanted.iter().any(|p| !p.get("address").is_some_and(Value::is_object)) {
            let error = user_error("Each property needs an address", &["input", "properties"]);
            return Ok((json!({"properties": [], "userErrors": [error]}), Vec::new()));
        }
        let mut created = Vec::new();
        let mut changes = Vec::new();
        for _ in wanted {
            let (id, _) = self.next_id("Property");
            self.properties.insert(id.clone(), Property { client_id: client_id.clone() });
            created.push(json!({"id": id}));
            changes.push(("PROPERTY_CREATE", id));
        }
        Ok((json!({"properties": created, "userErrors": []}), changes))
    }

    fn job_create(&mut self, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        let input = object_argument(args, "input", "JobCreateAttributes!")?;
        let property_id = text(input, "propertyId").unwrap_or_default();
        if id_kind(&property_id).is_none() {
            let explanation = format!("'{property_id}' is not a valid EncodedId (propertyId)");
            return Err(vec![invalid_variable("input", "JobCreateAttributes!", &explanation)]);
        }
        let invoicing = input.get("invoicing");
        let invoicing_ok = ["invoicingType", "invoicingSchedule"]
            .iter()
            .all(|name| invoicing.and_then(|i| i.get(*name)).and_then(Value::as_str).is_some());
        if !invoicing_ok {
            let explanation = "invoicing {invoicingType, invoicingSchedule} is required";
            return Err(vec![invalid_variable("input", "JobCreateAttributes!", explanation)]);
        }
        if !self.properties.contains_key(&property_id) {
            let error = user_error("Property not found", &["input", "propertyId"]);
            return Ok((json!({"job": null, "userErrors": [error]}), Vec::new()));
        }
        let (id, number) = self.next_id("Job");
        let title = text(input, "title");
        let reply = json!({"job": {"id": id, "jobNumber": number, "title": title}, "userErrors": []});
        self.jobs.insert(id.clone(), Job { property_id });
        Ok((reply, vec![("JOB_CREATE", id)]))
    }

    fn visit_create(&mut self, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        let job_id = id_argument(args, "jobId")?;
        let input = object_argument(args, "input", "VisitCreateInput!")?;
        let Some(job) = self.jobs.get(&job_id) else {
            let error = user_error("Job not found", &["jobId"]);
            return Ok((json!({"createdVisits": [], "job": null, "userErrors": [error]}), Vec::new()));
        };
        let client_id = self.properties.get(&job.property_id).map(|p| p.client_id.clone()).unwrap_or_default();
        let wanted = input.get("visits").and_then(Value::as_array).cloned().unwrap_or_default();
        if wanted.is_empty() {
            return Err(vec![invalid_variable("input", "VisitCreateInput!", "visits: at least one visit is required")]);
        }
        let mut planned = Vec::new();
        for visit in &wanted {
            let schedule = visit.get("schedule");
            let times = local_date_time(schedule.and_then(|s| s.get("startAt")), "startAt")
                .and_then(|start| Ok((start, local_date_time(schedule.and_then(|s| s.get("endAt")), "endAt")?)));
            match times {
                Ok((start, end)) if end > start => planned.push((text(visit, "title"), start, end)),
                Ok(_) => {
                    let error = user_error("End time must be after start time", &["input", "visits"]);
                    return Ok((
                        json!({"createdVisits": [], "job": {"id": job_id}, "userErrors": [error]}),
                        Vec::new(),
                    ));
                }
                Err(error) => {
                    return Ok((
                        json!({"createdVisits": [], "job": {"id": job_id}, "userErrors": [error]}),
                        Vec::new(),
                    ));
                }
            }
        }
        let mut created = Vec::new();
        let mut changes = Vec::new();
        for (title, start_at, end_at) in planned {
            let (id, _) = self.next_id("Visit");
            let visit = JobberVisit {
                id: id.clone(),
                job_id: job_id.clone(),
                client_id: client_id.clone(),
                title,
                start_at,
                end_at,
            };
            created.push(visit_json(&visit));
            self.visits.insert(id.clone(), visit);
            changes.push(("VISIT_CREATE", id));
        }
        Ok((json!({"createdVisits": created, "job": {"id": job_id}, "userErrors": []}), changes))
    }

    fn visit_edit_schedule(&mut self, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        let id = id_argument(args, "id")?;
        let input = object_argument(args, "input", "VisitEditScheduleInput!")?;
        let Some(visit) = self.visits.get_mut(&id) else {
            let error = user_error("Visit not found", &["id"]);
            return Ok((json!({"visit": null, "userErrors": [error]}), Vec::new()));
        };
        let start = input.get("startAt").map(|v| local_date_time(Some(v), "startAt")).transpose();
        let end = input.get("endAt").map(|v| local_date_time(Some(v), "endAt")).transpose();
        let (start, end) = match (start, end) {
            (Ok(start), Ok(end)) => (start.unwrap_or(visit.start_at), end.unwrap_or(visit.end_at)),
            (Err(error), _) | (_, Err(error)) => {
                return Ok((json!({"visit": null, "userErrors": [error]}), Vec::new()));
            }
        };
        if end <= start {
            let error = user_error("End time must be after start time", &["input"]);
            return Ok((json!({"visit": null, "userErrors": [error]}), Vec::new()));
        }
        visit.start_at = start;
        visit.end_at = end;
        Ok((json!({"visit": visit_json(visit), "userErrors": []}), vec![("VISIT_UPDATE", id)]))
    }

    fn visit_delete(&mut self, args: &Map<String, Value>) -> Result<(Value, Vec<Change>), Errors> {
        let ids: Vec<String> = args
            .get("visitIds")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if ids.is_empty() || ids.iter().any(|id| id_kind(id).is_none()) {
            return Err(vec![invalid_variable("visitIds", "[EncodedId!]!", "a list of valid EncodedIds is required")]);
        }
        if let Some(missing) = ids.iter().position(|id| !self.visits.contains_key(id)) {
            let index = missing.to_string();
            let error = user_error("Visit not found", &["visitIds", &index]);
            return Ok((json!({"visits": [], "userErrors": [error]}), Vec::new()));
        }
        let mut deleted = Vec::new();
        let mut changes = Vec::new();
        for id in ids {
            self.visits.remove(&id);
            deleted.push(json!({"id": id}));
            changes.push(("VISIT_DESTROY", id));
        }
        Ok((json!({"visits": deleted, "userErrors": []}), changes))
    }

    pub(crate) fn visits(&self) -> Vec<JobberVisit> {
        self.visits.values().cloned().collect()
    }

    /// How many clients and jobs exist: for tests that a retry did not duplicate them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.clients.len(), self.jobs.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn at(date: &str, time: &str) -> Value {
        json!({"date": date, "time": time, "timezone": "UTC"})
    }

    /// client → property → job → visit, as the calendar adapter makes them.
    fn visit(store: &mut JobberStore) -> String {
        let (client, _) = store.execute("clientCreate", &args(json!({"input": {"firstName": "Ann"}}))).unwrap();
        let client_id = client["client"]["id"].as_str().unwrap().to_owned();
        let property_input =
            json!({"clientId": client_id, "input": {"properties": [{"address": {"street1": "1 Main St"}}]}});
        let (property, _) = store.execute("propertyCreate", &args(property_input)).unwrap();
        let property_id = property["properties"][0]["id"].as_str().unwrap().to_owned();
        let job_input = json!({"input": {"propertyId": property_id, "title": "Tune-up",
            "invoicing": {"invoicingType": "FIXED_PRICE", "invoicingSchedule": "ON_COMPLETION"}}});
        let (job, changes) = store.execute("jobCreate", &args(job_input)).unwrap();
        assert_eq!(changes[0].0, "JOB_CREATE");
        let job_id = job["job"]["id"].as_str().unwrap().to_owned();
        let visit_input = json!({"jobId": job_id, "input": {"visits": [{"title": "Tune-up",
            "schedule": {"startAt": at("2030-01-01", "09:00:00"), "endAt": at("2030-01-01", "10:30:00")}}]}});
        let (created, changes) = store.execute("visitCreate", &args(visit_input)).unwrap();
        assert_eq!(changes[0].0, "VISIT_CREATE");
        assert_eq!(created["createdVisits"][0]["startAt"], "2030-01-01T09:00:00Z");
        created["createdVisits"][0]["id"].as_str().unwrap().to_owned()
    }

    #[test]
    fn encoded_ids_are_base64_gids() {
        let id = encoded_id("Visit", 901);
        assert_eq!(id, "Z2lkOi8vSm9iYmVyL1Zpc2l0LzkwMQ==");
        assert_eq!(id_kind(&id).as_deref(), Some("Visit"));
        assert_eq!(id_kind("1"), None);
    }

    #[test]
    fn a_visit_is_created_rescheduled_and_deleted() {
        let mut store = JobberStore::default();
        let id = visit(&mut store);
        let edit =
            json!({"id": id, "input": {"startAt": at("2030-01-02", "11:00"), "endAt": at("2030-01-02", "12:00")}});
        let (edited, changes) = store.execute("visitEditSchedule", &args(edit)).unwrap();
        assert_eq!(edited["visit"]["startAt"], "2030-01-02T11:00:00Z");
        assert_eq!(changes, vec![("VISIT_UPDATE", id.clone())]);
        let (deleted, _) = store.execute("visitDelete", &args(json!({"visitIds": [id]}))).unwrap();
        assert_eq!(deleted["userErrors"], json!([]));
        let (again, _) = store.execute("visitDelete", &args(json!({"visitIds": [id]}))).unwrap();
        assert_eq!(again["userErrors"][0]["message"], "Visit not found");
        let (gone, _) = store.execute("visit", &args(json!({"id": id}))).unwrap();
        assert_eq!(gone, Value::Null, "not found by id is null, not an error");
    }

    #[test]
    fn bad_ids_are_variable_errors_and_business_rules_are_user_errors() {
        let mut store = JobberStore::default();
        let errors = store.execute("visit", &args(json!({"id": "1"}))).unwrap_err();
        assert!(errors[0]["message"].as_str().unwrap().contains("EncodedId! was provided invalid value"));
        let (reply, _) = store.execute("clientCreate", &args(json!({"input": {}}))).unwrap();
        assert_eq!(reply["userErrors"].as_array().unwrap().len(), 1);
        let no_invoicing = json!({"input": {"propertyId": encoded_id("Property", 5)}});
        assert!(store.execute("jobCreate", &args(no_invoicing)).is_err());
    }

    #[test]
    fn only_utc_times_are_understood() {
        let zoned = json!({"date": "2030-01-01", "time": "09:00", "timezone": "America/Chicago"});
        assert!(local_date_time(Some(&zoned), "startAt").is_err());
        let utc = local_date_time(Some(&at("2030-01-01", "09:00:00.000000000")), "startAt").unwrap();
        assert_eq!(instant(utc), "2030-01-01T09:00:00Z");
    }
}

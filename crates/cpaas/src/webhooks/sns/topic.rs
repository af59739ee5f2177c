//! SNS topic ARNs: which topics we expect notifications from is configuration, parsed once into
//! this type, and the account a topic belongs to is part of its name.
//!
//! A signed notification only proves that AWS delivered it for *some* topic; anyone can create
//! a topic, subscribe our endpoint and publish on it. So the route accepts a notification only
//! when its `TopicArn` is one we were told about (AWS's own guidance for HTTP subscribers).

use std::fmt;

/// `arn:<partition>:sns:<region>:<12-digit account>:<name>`, as CloudFormation's
/// `SnsDestination.TopicARN` pattern has it: `^arn:aws[a-z0-9-]*:sns:[a-z0-9-]+:\d{12}:[^:]+$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicArn(String);

impl TopicArn {
    /// Parses an ARN; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let parts: Vec<&str> = raw.split(':').collect();
        let [arn, partition, service, region, account, name] = parts.as_slice() else {
            return Err("must look like arn:aws:sns:<region>:<account id>:<topic name>".to_owned());
        };
        let lower_alnum_dash =
            |text: &str| text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if *arn != "arn" || !partition.starts_with("aws") || !lower_alnum_dash(partition) {
            return Err("must start with arn:aws".to_owned());
        }
        if *service != "sns" {
            return Err("must be an SNS topic (arn:aws:sns:…)".to_owned());
        }
        if region.is_empty() || !lower_alnum_dash(region) {
            return Err("has no valid region".to_owned());
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must name a 12-digit AWS account id".to_owned());
        }
        // SNS topic names: 1-256 of [A-Za-z0-9_-], FIFO topics end in `.fifo`.
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        if base.is_empty()
            || name.len() > 256
            || !base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("has no valid topic name".to_owned());
        }
        Ok(Self(raw.to_owned()))
    }

    /// The AWS account that owns the topic.
    pub fn account_id(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `raw` is a 12-digit AWS account id.
pub fn is_account_id(raw: &str) -> bool {
    raw.len() == 12 && raw.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_topic_arns() {
        let topic = TopicArn::parse("arn:aws:sns:us-west-2:123456789012:MyTopic").expect("a real topic ARN");
        assert_eq!(topic.account_id(), "123456789012");
        assert!(TopicArn::parse("arn:aws-cn:sns:cn-north-1:123456789012:ses_events").is_ok());
        assert!(TopicArn::parse("arn:aws-us-gov:sns:us-gov-west-1:123456789012:a-b_c").is_ok());
        assert!(TopicArn::parse(" arn:aws:sns:eu-central-1:123456789012:orders.fifo ").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_topic_arn() {
        for raw in [
            "",
            "MyTopic",
            "arn:aws:sqs:us-west-2:123456789012:queue",
            "arn:aws:sns:us-west-2:12345:MyTopic",
            "arn:aws:sns:us-west-2:123456789012:",
            "arn:aws:sns:us-west-2:123456789012:My Topic",
            "arn:aws:sns:us-west-2:123456789012:MyTopic:subscription-id",
            "arn:gcp:sns:us-west-2:123456789012:MyTopic",
            "arn:aws:sns::123456789012:MyTopic",
        ] {
            assert!(TopicArn::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }
}

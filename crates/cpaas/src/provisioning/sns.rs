//! SNS sender check (docs/providers/sns.md §2): prove the credentials with a cheap authenticated
//! call (`CheckIfPhoneNumberIsOptedOut` on a fictional number), and when an origination number is
//! configured, find it in `ListOriginationNumbers` with SMS capability.
//!
//! Errors: AWS auth codes (`AuthorizationError`, `InvalidClientTokenId`, …) → Unauthorized;
//! throttling and 5xx → Unavailable; an origination number missing from the account → NotFound;
//! present but without SMS → Rejected.

use aws_sdk_sns::types::NumberCapability;

use super::ProvisioningError;
use super::ProvisioningErrorKind;
use super::aws_error::from_sdk_error;
use crate::SnsConfig;
use crate::send::SendOptions;

/// A number in the North American fictional 555-01xx range: checking it changes nothing and
/// costs nothing, but needs valid credentials.
const PROBE_NUMBER: &str = "+12025550100";
/// `ListOriginationNumbers` pages (30 numbers each) read before giving up.
const MAX_PAGES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderCheck {
    /// The configured origination number as SNS lists it; `None` when none is configured.
    pub origination_number: Option<OriginationNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginationNumber {
    pub phone_number: String,
    /// e.g. `ACTIVE`.
    pub status: Option<String>,
    pub iso2_country_code: Option<String>,
    /// `SMS`, `MMS`, `VOICE`.
    pub capabilities: Vec<String>,
}

pub async fn check_sender(config: &SnsConfig) -> Result<SenderCheck, ProvisioningError> {
    let client = crate::send::sns::build_client(config, &SendOptions::default())?;
    client
        .check_if_phone_number_is_opted_out()
        .phone_number(PROBE_NUMBER)
        .send()
        .await
        .map_err(|e| from_sdk_error(&e))?;
    let Some(wanted) = config.origination_number.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(SenderCheck { origination_number: None });
    };
    let found = find_origination_number(&client, wanted).await?;
    let Some(number) = found else {
        return Err(ProvisioningError::new(
            ProvisioningErrorKind::NotFound,
            None,
            format!("origination number {wanted} is not in this AWS account's origination numbers"),
        ));
    };
    if !number.capabilities.iter().any(|c| c == "SMS") {
        return Err(ProvisioningError::rejected(format!("origination number {wanted} cannot send SMS")));
    }
    Ok(SenderCheck { origination_number: Some(number) })
}

async fn find_origination_number(
    client: &aws_sdk_sns::Client,
    wanted: &str,
) -> Result<Option<OriginationNumber>, ProvisioningError> {
    let mut next_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .list_origination_numbers()
            .max_results(30)
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| from_sdk_error(&e))?;
        if let Some(info) = page.phone_numbers().iter().find(|n| n.phone_number() == Some(wanted)) {
            return Ok(Some(OriginationNumber {
                phone_number: wanted.to_owned(),
                status: info.status().map(str::to_owned),
                iso2_country_code: info.iso2_country_code().map(str::to_owned),
                capabilities: info.number_capabilities().iter().map(capability_name).collect(),
            }));
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn capability_name(capability: &NumberCapability) -> String {
    capability.as_str().to_owned()
}

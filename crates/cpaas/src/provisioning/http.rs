//! One reqwest call for the reqwest-based provisioning functions (Meta, Twilio).

use super::{PROVISIONING_TIMEOUT, ProvisioningError};
use crate::send::http::describe;

/// Sends the request and reads the answer as (status, body). Any transport failure is
/// `Unavailable` (provisioning calls are safe to repeat); the error text never carries the URL.
pub(crate) async fn fetch(request: reqwest::RequestBuilder) -> Result<(u16, String), ProvisioningError> {
    let response = request
        .timeout(PROVISIONING_TIMEOUT)
        .send()
        .await
        .map_err(|e| ProvisioningError::unavailable(format!("provider unreachable: {}", describe(&e))))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| ProvisioningError::unavailable(format!("provider answer unreadable: {}", describe(&e))))?;
    Ok((status, body))
}

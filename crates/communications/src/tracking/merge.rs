//! The pure rule: which status a provider event leads to.

use cpaas::DeliveryStatus;

use crate::messages::model::MessageStatus;

/// Position on the delivery lattice; `None` for states that provider events never change.
fn rank(status: MessageStatus) -> Option<u8> {
    match status {
        MessageStatus::Queued | MessageStatus::PendingReview | MessageStatus::Sending | MessageStatus::Unknown => {
            Some(0)
        }
        MessageStatus::Sent => Some(1),
        MessageStatus::Failed => Some(2),
        MessageStatus::Delivered => Some(3),
        MessageStatus::Read => Some(4),
        // Inbound messages have no delivery of ours to track.
        MessageStatus::Superseded | MessageStatus::Canceled | MessageStatus::Received => None,
    }
}

/// The message status a provider's delivery status means, if any (complaints and delays are
/// events on the record, not states).
pub fn status_of(delivery: DeliveryStatus) -> Option<MessageStatus> {
    match delivery {
        DeliveryStatus::Sent => Some(MessageStatus::Sent),
        DeliveryStatus::Delivered => Some(MessageStatus::Delivered),
        DeliveryStatus::Read | DeliveryStatus::Opened => Some(MessageStatus::Read),
        DeliveryStatus::Failed | DeliveryStatus::Bounced | DeliveryStatus::Rejected => Some(MessageStatus::Failed),
        DeliveryStatus::Complained | DeliveryStatus::Delayed => None,
    }
}

/// The status after applying `event` to a message in `current`: only forward moves.
pub fn next(current: MessageStatus, event: DeliveryStatus) -> Option<MessageStatus> {
    let proposed = status_of(event)?;
    match (rank(current), rank(proposed)) {
        (Some(now), Some(then)) if then > now => Some(proposed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(start: MessageStatus, events: &[DeliveryStatus]) -> MessageStatus {
        events.iter().fold(start, |status, event| next(status, *event).unwrap_or(status))
    }

    /// Every ordering, with duplicates, ends in the same state.
    #[test]
    fn permutations_and_duplicates_converge() {
        use DeliveryStatus::*;
        let sets: [&[DeliveryStatus]; 4] = [
            &[Sent, Delivered, Read],
            &[Sent, Failed],
            &[Sent, Delivered, Failed],
            &[Sent, Sent, Delivered, Delivered],
        ];
        for set in sets {
            let expected = fold(MessageStatus::Sending, set);
            let mut order: Vec<usize> = (0..set.len()).collect();
            for_each_permutation(&mut order, 0, &mut |order| {
                let events: Vec<DeliveryStatus> = order.iter().map(|i| set[*i]).collect();
                assert_eq!(fold(MessageStatus::Sending, &events), expected, "{events:?}");
                let doubled: Vec<DeliveryStatus> = events.iter().flat_map(|e| [*e, *e]).collect();
                assert_eq!(fold(MessageStatus::Unknown, &doubled), expected, "{doubled:?}");
            });
        }
    }

    fn for_each_permutation(items: &mut Vec<usize>, k: usize, visit: &mut impl FnMut(&[usize])) {
        if k == items.len() {
            visit(items);
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            for_each_permutation(items, k + 1, visit);
            items.swap(k, i);
        }
    }

    #[test]
    fn delivered_never_goes_back() {
        assert_eq!(next(MessageStatus::Delivered, DeliveryStatus::Sent), None);
        assert_eq!(next(MessageStatus::Read, DeliveryStatus::Delivered), None);
        assert_eq!(next(MessageStatus::Delivered, DeliveryStatus::Failed), None);
        assert_eq!(next(MessageStatus::Failed, DeliveryStatus::Delivered), Some(MessageStatus::Delivered));
        assert_eq!(next(MessageStatus::Unknown, DeliveryStatus::Sent), Some(MessageStatus::Sent));
        assert_eq!(next(MessageStatus::Superseded, DeliveryStatus::Read), None);
        assert_eq!(next(MessageStatus::Sent, DeliveryStatus::Complained), None);
    }
}

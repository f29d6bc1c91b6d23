//! The subscription transitions of one roster item (RFC 6121 §3 and Appendix A), with the
//! ENT's extensions (persisted refusal, mutual acceptance, symmetric removal), as one table.
//!
//! A request between two local users changes two items: the requester's item for the
//! contact (its "to" side and `ask`, the pending-out state) and the contact's item for the
//! requester (its "from" side and `approved`). The pending-in state of RFC 6121 is not on an
//! item: it is the stored request (`storage::SubscriptionRequest`). Each arm says what one
//! event does to one item, and nothing else: no store, no delivery, so that every transition
//! is unit-tested below. `im::subscription` runs them under each user's roster lock and
//! decides what the users are told from the items before and after.

use crate::im::roster::Update;
use crate::storage::RosterItem;

/// What happens to one roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The owner asks for the contact's presence (outbound `subscribe`, §3.1.2): pending out,
    /// unless already subscribed. A new request forgets an earlier refusal.
    Ask,
    /// The owner asks for the presence of an account that does not exist: pending out as for
    /// anyone, so that nothing tells the account is missing.
    AskNobody,
    /// The contact's approval arrives (inbound `subscribed`, §3.1.6): "to" on, no longer
    /// pending. Only on an existing item that is pending or not yet subscribed.
    Approved,
    /// The owner lets the contact see its presence (outbound `subscribed`, §3.1.5): "from"
    /// on; a pre-approval is used up.
    Grant,
    /// The owner approves before being asked (§3.4).
    PreApprove,
    /// Mutual acceptance (ENT): the requester, having asked first, is seen by the contact
    /// it asked: "from" on.
    MutualFrom,
    /// Mutual acceptance (ENT): the contact who accepted sees the requester: "to" on, no
    /// longer pending, no refusal.
    MutualTo,
    /// The owner no longer wants the contact's presence or withdraws its request (outbound
    /// `unsubscribe`, §3.3.2).
    Unsubscribe,
    /// The contact no longer wants the owner's presence (inbound `unsubscribe`, §3.3.3).
    Unsubscribed,
    /// The owner cancels the contact's subscription or declines its request (outbound
    /// `unsubscribed`, §3.2.2): "from" off, a pre-approval dropped.
    Cancel,
    /// The contact cancels the owner's subscription or refuses its request (inbound
    /// `unsubscribed`, §3.2.3): "to" off, no longer pending; a pending request turned down
    /// is remembered as refused when refusals persist (ENT).
    Cancelled,
    /// The owner removes the contact (roster `remove`, §2.5.3).
    Remove,
    /// The contact removed the owner: the item goes too with symmetric removal (ENT), else
    /// its subscription ends both ways (§2.5.3: the contact's server sends both
    /// `unsubscribe` and `unsubscribed`).
    RemovedBy,
}

/// The server's options that change the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub persist_refusal: bool,
    pub symmetric_removal: bool,
}

impl Transition {
    /// What `self` makes of `current`; `fresh` builds the item a transition creates.
    pub fn apply(
        self,
        current: Option<RosterItem>,
        fresh: impl FnOnce() -> RosterItem,
        rules: Rules,
    ) -> Update {
        use Transition::*;
        let Some(mut item) = current else {
            return match self {
                Ask | AskNobody | Grant | PreApprove | MutualFrom | MutualTo => {
                    let mut item = fresh();
                    change(self, &mut item, rules);
                    Update::Save(item)
                }
                _ => Update::Keep,
            };
        };
        let applies = match self {
            Ask => !item.subscription.has_to(),
            AskNobody => !item.ask,
            Approved => item.ask || !item.subscription.has_to(),
            Grant | PreApprove | MutualFrom | MutualTo | Remove | RemovedBy => true,
            Unsubscribe | Cancelled => item.ask || item.subscription.has_to(),
            Unsubscribed => item.subscription.has_from(),
            Cancel => item.subscription.has_from() || item.approved,
        };
        if !applies {
            return Update::Keep;
        }
        match self {
            Remove => Update::Remove,
            RemovedBy if rules.symmetric_removal => Update::Remove,
            _ => {
                let before = item.clone();
                change(self, &mut item, rules);
                if item == before {
                    Update::Keep
                } else {
                    Update::Save(item)
                }
            }
        }
    }
}

/// The change itself, once `apply` has decided that it applies.
fn change(transition: Transition, item: &mut RosterItem, rules: Rules) {
    use Transition::*;
    let sub = item.subscription;
    match transition {
        Ask | AskNobody => {
            item.ask = true;
            item.refused = false;
        }
        Approved | MutualTo => {
            item.subscription = sub.with_to(true);
            item.ask = false;
            item.refused = false;
        }
        Grant => {
            item.subscription = sub.with_from(true);
            item.approved = false;
        }
        PreApprove => item.approved = true,
        MutualFrom => item.subscription = sub.with_from(true),
        Unsubscribe => {
            item.subscription = sub.with_to(false);
            item.ask = false;
        }
        Unsubscribed => item.subscription = sub.with_from(false),
        Cancel => {
            item.subscription = sub.with_from(false);
            item.approved = false;
        }
        Cancelled => {
            // A pending request turned down is a refusal; a cancelled subscription is not.
            item.refused = rules.persist_refusal && item.ask;
            item.ask = false;
            item.subscription = sub.with_to(false);
        }
        Remove => {}
        RemovedBy => {
            item.subscription = crate::storage::Subscription::None;
            item.ask = false;
            item.approved = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Transition::{self, *};
    use super::*;
    use crate::storage::Subscription;

    /// An item in RFC 6121 Appendix A's words: `none`, `to`, `from`, `both`, then `+out`
    /// (pending out: `ask`), `+approved`, `+refused`; `-` for no item.
    fn item(state: &str) -> Option<RosterItem> {
        if state == "-" {
            return None;
        }
        let mut parts = state.split('+');
        let subscription = Subscription::parse(parts.next().unwrap()).expect("a subscription");
        let mut item = RosterItem {
            contact: "contact@example.org".into(),
            name: Some("NOM Prénom".into()),
            subscription,
            groups: vec!["Classe".into()],
            ..RosterItem::default()
        };
        for flag in parts {
            match flag {
                "out" => item.ask = true,
                "approved" => item.approved = true,
                "refused" => item.refused = true,
                other => panic!("unknown flag {other}"),
            }
        }
        Some(item)
    }

    fn describe(item: &RosterItem) -> String {
        let mut text = item.subscription.as_str().to_owned();
        for (on, flag) in [
            (item.ask, "out"),
            (item.approved, "approved"),
            (item.refused, "refused"),
        ] {
            if on {
                text.push('+');
                text.push_str(flag);
            }
        }
        text
    }

    /// What a transition makes of a state: the same notation, `keep` when nothing changes,
    /// `remove` when the item goes.
    fn after(transition: Transition, state: &str, rules: Rules) -> String {
        let fresh = || item("none").unwrap();
        match transition.apply(item(state), fresh, rules) {
            Update::Keep => "keep".into(),
            Update::Remove => "remove".into(),
            Update::Save(saved) => {
                // A transition changes the subscription state, never the name or categories.
                assert_eq!(saved.contact, "contact@example.org");
                assert_eq!(saved.name.as_deref(), Some("NOM Prénom"));
                assert_eq!(saved.groups, ["Classe"]);
                describe(&saved)
            }
        }
    }

    const ENT: Rules = Rules {
        persist_refusal: true,
        symmetric_removal: true,
    };
    const STANDARD: Rules = Rules {
        persist_refusal: false,
        symmetric_removal: false,
    };

    /// Every state a test runs each transition through.
    const STATES: [&str; 13] = [
        "-",
        "none",
        "none+out",
        "to",
        "from",
        "from+out",
        "both",
        "none+approved",
        "none+out+approved",
        "none+refused",
        "to+approved",
        "from+refused",
        "both+approved",
    ];

    /// Checks a transition against the expected result of every state (`STATES` order).
    fn check(transition: Transition, rules: Rules, expected: [&str; 13]) {
        for (state, want) in STATES.iter().zip(expected) {
            assert_eq!(
                after(transition, state, rules),
                want,
                "{transition:?} from {state} ({rules:?})"
            );
        }
    }

    #[test]
    fn asking_sets_pending_out_unless_subscribed() {
        // A.2.1 (outbound subscribe): None → None + Pending Out, From → From + Pending Out;
        // already To or Both: no change (the server answers `subscribed` itself, §3.1.3).
        let expected = [
            "none+out",
            "none+out",
            "keep",
            "keep",
            "from+out",
            "keep",
            "keep",
            "none+out+approved",
            "keep",
            "none+out",
            "keep",
            "from+out",
            "keep",
        ];
        check(Ask, ENT, expected);
        check(Ask, STANDARD, expected);
    }

    #[test]
    fn asking_nobody_looks_like_asking_anybody() {
        check(
            AskNobody,
            ENT,
            [
                "none+out",
                "none+out",
                "keep",
                "to+out",
                "from+out",
                "keep",
                "both+out",
                "none+out+approved",
                "keep",
                "none+out",
                "to+out+approved",
                "from+out",
                "both+out+approved",
            ],
        );
    }

    #[test]
    fn an_approval_arriving_subscribes() {
        // A.3.2 (inbound subscribed): None + Pending Out → To, From + Pending Out → Both; on
        // no item, nothing (a `subscribed` nobody asked for is ignored).
        check(
            Approved,
            ENT,
            [
                "keep",
                "to",
                "to",
                "keep",
                "both",
                "both",
                "keep",
                "to+approved",
                "to+approved",
                "to",
                "keep",
                "both",
                "keep",
            ],
        );
    }

    #[test]
    fn granting_lets_the_contact_see_and_uses_a_pre_approval() {
        // A.2.2 (outbound subscribed): None → From, To → Both; a pre-approval is spent.
        let expected = [
            "from",
            "from",
            "from+out",
            "both",
            "keep",
            "keep",
            "keep",
            "from",
            "from+out",
            "from+refused",
            "both",
            "keep",
            "both",
        ];
        check(Grant, ENT, expected);
        check(Grant, STANDARD, expected);
    }

    #[test]
    fn pre_approving_marks_the_item() {
        check(
            PreApprove,
            ENT,
            [
                "none+approved",
                "none+approved",
                "none+out+approved",
                "to+approved",
                "from+approved",
                "from+out+approved",
                "both+approved",
                "keep",
                "keep",
                "none+approved+refused",
                "keep",
                "from+approved+refused",
                "keep",
            ],
        );
    }

    #[test]
    fn mutual_acceptance_completes_both_sides() {
        check(
            MutualFrom,
            ENT,
            [
                "from",
                "from",
                "from+out",
                "both",
                "keep",
                "keep",
                "keep",
                "from+approved",
                "from+out+approved",
                "from+refused",
                "both+approved",
                "keep",
                "keep",
            ],
        );
        check(
            MutualTo,
            ENT,
            [
                "to",
                "to",
                "to",
                "keep",
                "both",
                "both",
                "keep",
                "to+approved",
                "to+approved",
                "to",
                "keep",
                "both",
                "keep",
            ],
        );
    }

    #[test]
    fn unsubscribing_ends_to_and_withdraws() {
        // A.2.3 (outbound unsubscribe): To → None, Both → From, Pending Out withdrawn.
        check(
            Unsubscribe,
            ENT,
            [
                "keep",
                "keep",
                "none",
                "none",
                "keep",
                "from",
                "from",
                "keep",
                "none+approved",
                "keep",
                "none+approved",
                "keep",
                "from+approved",
            ],
        );
    }

    #[test]
    fn an_unsubscribe_arriving_ends_from() {
        // A.3.3 (inbound unsubscribe): From → None, Both → To.
        check(
            Unsubscribed,
            ENT,
            [
                "keep",
                "keep",
                "keep",
                "keep",
                "none",
                "none+out",
                "to",
                "keep",
                "keep",
                "keep",
                "keep",
                "none+refused",
                "to+approved",
            ],
        );
    }

    #[test]
    fn cancelling_ends_from_and_drops_a_pre_approval() {
        // A.2.4 (outbound unsubscribed): From → None, Both → To; a pre-approval is withdrawn
        // (§3.4).
        check(
            Cancel,
            ENT,
            [
                "keep",
                "keep",
                "keep",
                "keep",
                "none",
                "none+out",
                "to",
                "none",
                "none+out",
                "keep",
                "to",
                "none+refused",
                "to",
            ],
        );
    }

    #[test]
    fn a_refusal_is_remembered_only_for_a_pending_request_and_only_in_the_ent_mode() {
        // A.3.4 (inbound unsubscribed): To → None, Both → From, Pending Out → None.
        check(
            Cancelled,
            ENT,
            [
                "keep",
                "keep",
                "none+refused",
                "none",
                "keep",
                "from+refused",
                "from",
                "keep",
                "none+approved+refused",
                "keep",
                "none+approved",
                "keep",
                "from+approved",
            ],
        );
        check(
            Cancelled,
            STANDARD,
            [
                "keep",
                "keep",
                "none",
                "none",
                "keep",
                "from",
                "from",
                "keep",
                "none+approved",
                "keep",
                "none+approved",
                "keep",
                "from+approved",
            ],
        );
    }

    #[test]
    fn removal_takes_the_item_and_symmetric_removal_the_other_too() {
        let gone = [
            "keep", "remove", "remove", "remove", "remove", "remove", "remove", "remove", "remove",
            "remove", "remove", "remove", "remove",
        ];
        check(Remove, ENT, gone);
        check(Remove, STANDARD, gone);
        check(RemovedBy, ENT, gone);
        // §2.5.3 without symmetric removal: the contact keeps its item, subscriptions ended
        // both ways; a refusal stays visible.
        check(
            RemovedBy,
            STANDARD,
            [
                "keep",
                "keep",
                "none",
                "none",
                "none",
                "none",
                "none",
                "none",
                "none",
                "keep",
                "none",
                "none+refused",
                "none",
            ],
        );
    }

    #[test]
    fn a_new_item_is_built_only_by_transitions_that_create_one() {
        for transition in [
            Approved,
            Unsubscribe,
            Unsubscribed,
            Cancel,
            Cancelled,
            Remove,
            RemovedBy,
        ] {
            let update = transition.apply(None, || panic!("{transition:?} built an item"), ENT);
            assert!(matches!(update, Update::Keep), "{transition:?}");
        }
    }
}

//! User search (XEP-0055, `jabber:iq:search` with a XEP-0004 data form) on the server's JID,
//! over display names and identifiers. Only users the searcher may contact, who logged in at
//! least once and did not opt out of the directory are found; results are capped.
//!
//! The opt-out is the user's own choice, set with `urn:causette:directory:0`
//! (docs/extensions.md).

use minidom::Element;
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::directory::DirectoryChange;
use crate::im::Context;
use crate::im::roster::local;
use crate::ns::name;
use crate::policy::{Action, Decision};
use crate::reply::Answer;
use crate::router::Sender;

pub const NS: &str = "jabber:iq:search";
pub const DIRECTORY_NS: &str = "urn:causette:directory:0";
const DATA_FORMS: &str = "jabber:x:data";
/// Results per search.
pub const MAX_RESULTS: usize = 50;
const MIN_TERM: usize = 2;

fn field(var: &'static str, type_: &'static str, label: &'static str) -> Element {
    Element::builder("field", DATA_FORMS)
        .attr(name("var"), var)
        .attr(name("type"), type_)
        .attr(name("label"), label)
        .build()
}

fn value_field(var: &str, value: &str) -> Element {
    Element::builder("field", DATA_FORMS)
        .attr(name("var"), var.to_owned())
        .append(
            Element::builder("value", DATA_FORMS)
                .append(value.to_owned())
                .build(),
        )
        .build()
}

/// XEP-0068: the form's type.
fn form_type() -> Element {
    Element::builder("field", DATA_FORMS)
        .attr(name("var"), "FORM_TYPE")
        .attr(name("type"), "hidden")
        .append(Element::builder("value", DATA_FORMS).append(NS).build())
        .build()
}

/// Lowercase, without the accents French names carry, so that "ines" finds "Inès".
fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'â' | 'ä' | 'á' => 'a',
            'ç' => 'c',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' | 'í' => 'i',
            'ô' | 'ö' | 'ó' => 'o',
            'ù' | 'û' | 'ü' | 'ú' => 'u',
            'ÿ' => 'y',
            other => other,
        })
        .collect()
}

/// Reads a submitted search form as the handler does.
#[cfg(feature = "fuzzing")]
pub fn fuzz_form(query: &Element) {
    let (term, _) = term_of(query);
    let _ = fold(term.unwrap_or_default().trim());
}

/// The search term of a submitted form, or of the legacy fields.
fn term_of(query: &Element) -> (Option<String>, bool) {
    if let Some(form) = query.get_child("x", DATA_FORMS) {
        let term = form
            .children()
            .filter(|f| f.is("field", DATA_FORMS) && f.attr("var") == Some("search"))
            .filter_map(|f| f.get_child("value", DATA_FORMS))
            .map(|v| v.text())
            .next();
        return (term, true);
    }
    let legacy = ["nick", "first", "last"]
        .into_iter()
        .filter_map(|n| query.get_child(n, NS))
        .map(|c| c.text())
        .find(|t| !t.trim().is_empty());
    (legacy, false)
}

pub async fn handle_iq(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    is_get: bool,
    query: &Element,
) -> Answer {
    if is_get {
        let form = Element::builder("x", DATA_FORMS)
            .attr(name("type"), "form")
            .append(
                Element::builder("title", DATA_FORMS)
                    .append("Rechercher une personne")
                    .build(),
            )
            .append(form_type())
            .append(field("search", "text-single", "Nom ou identifiant"))
            .build();
        return Ok(Some(
            Element::builder("query", NS)
                .append(
                    Element::builder("instructions", NS)
                        .append("Entrez au moins deux lettres du nom ou de l'identifiant.")
                        .build(),
                )
                .append(Element::builder("nick", NS).build())
                .append(form)
                .build(),
        ));
    }
    let (term, as_form) = term_of(query);
    let term = fold(term.unwrap_or_default().trim());
    if term.chars().count() < MIN_TERM {
        return Err((
            DefinedCondition::BadRequest,
            "enter at least two characters to search",
        )
            .into());
    }
    let searcher = local(&sender.jid.to_bare()).to_owned();
    let state = cx.policy.snapshot();
    let mut found: Vec<(&String, &String)> = state
        .users
        .iter()
        .filter(|(username, user)| {
            **username != searcher
                && user.first_login.is_some()
                && !user.hidden
                && (fold(&user.display_name).contains(&term) || username.contains(&term))
                && crate::policy::decide(
                    &state,
                    &searcher,
                    username,
                    Action::Search,
                    Default::default(),
                ) == Decision::Allow
        })
        .map(|(username, user)| (username, &user.display_name))
        .collect();
    found.sort_by(|a, b| fold(a.1).cmp(&fold(b.1)).then(a.0.cmp(b.0)));
    found.truncate(MAX_RESULTS);
    let domain = cx.domain.domain().as_str();
    let mut result = Element::builder("query", NS);
    if as_form {
        let reported = Element::builder("reported", DATA_FORMS)
            .append(field("jid", "jid-single", "Adresse"))
            .append(field("name", "text-single", "Nom"))
            .build();
        let items = found.iter().map(|(username, display)| {
            Element::builder("item", DATA_FORMS)
                .append(value_field("jid", &format!("{username}@{domain}")))
                .append(value_field("name", display))
                .build()
        });
        result = result.append(
            Element::builder("x", DATA_FORMS)
                .attr(name("type"), "result")
                .append(form_type())
                .append(reported)
                .append_all(items)
                .build(),
        );
    } else {
        result = result.append_all(found.iter().map(|(username, display)| {
            Element::builder("item", NS)
                .attr(name("jid"), format!("{username}@{domain}"))
                .append(
                    Element::builder("nick", NS)
                        .append((*display).clone())
                        .build(),
                )
                .build()
        }));
    }
    Ok(Some(result.build()))
}

/// `urn:causette:directory:0` on the user's own account: read or set the opt-out.
pub async fn directory_iq(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    is_get: bool,
    query: &Element,
) -> Answer {
    let username = local(&sender.jid.to_bare()).to_owned();
    let state = cx.policy.snapshot();
    let Some(user) = state.users.get(&username) else {
        return Err((
            DefinedCondition::ItemNotFound,
            "your account is not in the ENT directory",
        )
            .into());
    };
    if is_get {
        return Ok(Some(
            Element::builder("query", DIRECTORY_NS)
                .attr(name("hidden"), if user.hidden { "true" } else { "false" })
                .build(),
        ));
    }
    let hidden = match query.attr("hidden") {
        Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        _ => {
            return Err((
                DefinedCondition::BadRequest,
                "set hidden='true' or hidden='false'",
            )
                .into());
        }
    };
    if hidden == user.hidden {
        // Nothing changes, so nothing is written or audited.
        return Ok(None);
    }
    // Being hidden takes nobody's access away: no session to close, unlike the admin's
    // changes.
    cx.policy
        .apply(
            cx.store,
            &format!("user:{username}"),
            &[DirectoryChange::SetHidden { username, hidden }],
            &[],
        )
        .await
        .map_err(|_| {
            (
                DefinedCondition::InternalServerError,
                "could not be saved; try again",
            )
        })?;
    Ok(None)
}
